"""Resources: the seams between the stages and the outside world."""
