"""Helpers the test modules share: servers, projects, CLIs and real applications (no tests here)."""
