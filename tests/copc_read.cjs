// Read COPC files the way web viewers do, with copc.js: header, VLRs and extra-bytes descriptors, every
// hierarchy page, then every point of every node through every dimension's getter. Prints one JSON object per
// file (a line each); a file copc.js cannot open gets {"file", "error"} and the exit code is 1.
// Usage: node copc_read.cjs <copc.js package dir> FILE...
const path = require('path')
const { Copc, Bounds, Key } = require(path.resolve(process.argv[2]))

async function readOne(file) {
  const copc = await Copc.create(file)
  const nodes = {}
  const pages = [copc.info.rootHierarchyPage]
  while (pages.length) {
    const h = await Copc.loadHierarchyPage(file, pages.pop())
    Object.assign(nodes, h.nodes)
    pages.push(...Object.values(h.pages))
  }
  let points = 0
  let outside = 0
  let dims = []
  for (const [key, node] of Object.entries(nodes)) {
    if (!node.pointCount) continue
    const view = await Copc.loadPointDataView(file, copc, node)
    dims = Object.keys(view.dimensions)
    const get = dims.map((d) => view.getter(d))
    const [x, y, z] = ['X', 'Y', 'Z'].map((d) => view.getter(d))
    // node bounds as copc.js computes them, closed faces (copc-validator's xyz check)
    const [minx, miny, minz, maxx, maxy, maxz] = Bounds.stepTo(copc.info.cube, Key.parse(key))
    for (let i = 0; i < view.pointCount; i++) {
      for (const g of get) g(i)
      const px = x(i), py = y(i), pz = z(i)
      if (px < minx || px > maxx || py < miny || py > maxy || pz < minz || pz > maxz) outside++
    }
    points += view.pointCount
  }
  return {
    file, headerPointCount: copc.header.pointCount, pointsRead: points, outsideNode: outside,
    nodes: Object.keys(nodes).length, dimensions: dims, extraBytes: copc.eb, wkt: copc.wkt,
  }
}

(async () => {
  let failed = false
  for (const file of process.argv.slice(3)) {
    try {
      console.log(JSON.stringify(await readOne(file)))
    } catch (e) {
      failed = true
      console.log(JSON.stringify({ file, error: String(e && e.message || e) }))
    }
  }
  process.exit(failed ? 1 : 0)
})()
