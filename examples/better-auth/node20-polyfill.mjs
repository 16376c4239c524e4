// Better Auth's CLI (npm `auth`) asks for Node 22.12+; on Node 20 the one missing piece it uses
// is Object.groupBy (Node 21). Load with `node --import ./node20-polyfill.mjs`.
if (typeof Object.groupBy !== "function") {
  Object.groupBy = (items, key) => {
    const groups = Object.create(null);
    let index = 0;
    for (const item of items) (groups[key(item, index++)] ??= []).push(item);
    return groups;
  };
}
if (typeof Map.groupBy !== "function") {
  Map.groupBy = (items, key) => {
    const groups = new Map();
    let index = 0;
    for (const item of items) {
      const k = key(item, index++);
      if (!groups.has(k)) groups.set(k, []);
      groups.get(k).push(item);
    }
    return groups;
  };
}
