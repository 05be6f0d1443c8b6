// Droplet masks on the page: COCO compressed RLE (as the API sends them) decoded into bounding-box
// crops, outlines traced from the crops, a hit-test map, and a 16-bit grayscale PNG encoder for the
// label image export.

// COCO's compressed RLE string -> run lengths (pycocotools rleFrString).
export function rleCounts(text) {
  const counts = [];
  let p = 0;
  while (p < text.length) {
    let x = 0;
    let k = 0;
    let more = 1;
    while (more) {
      const c = text.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = c & 0x20;
      p += 1;
      k += 1;
      if (!more && c & 0x10) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

// A droplet's mask as a crop: {x0, y0, w, h, data: Uint8Array (row-major, 1 = inside)}.
export function cropMask(record) {
  const [x0, y0, w, h] = record.bbox;
  const height = record.mask.size[0];
  const data = new Uint8Array(Math.max(w * h, 1));
  const counts = rleCounts(record.mask.counts);
  let pos = 0;
  for (let i = 0; i < counts.length; i++) {
    const run = counts[i];
    if (i % 2 === 1) {
      // Runs go down the columns (Fortran order) of the whole image.
      for (let q = pos; q < pos + run; ) {
        const x = Math.floor(q / height);
        const y = q - x * height;
        const take = Math.min(pos + run - q, height - y);
        const cx = x - x0;
        if (cx >= 0 && cx < w) {
          for (let yy = Math.max(y, y0); yy < Math.min(y + take, y0 + h); yy++) data[(yy - y0) * w + cx] = 1;
        }
        q += take;
      }
    }
    pos += run;
  }
  return { x0, y0, w, h, data };
}

// The outlines of a crop mask: closed loops along pixel edges (interior on the right, going
// clockwise), each simplified to a polygon within `tolerance` px (Douglas-Peucker). A droplet 60 px
// across becomes ~30 vertices instead of ~240 edge segments, which is what keeps redrawing 1000
// outlines fast.
export function outlineLoops(m, tolerance = 0.7) {
  const W = m.w + 1; // vertices per row
  const inside = (x, y) => x >= 0 && y >= 0 && x < m.w && y < m.h && m.data[y * m.w + x] === 1;
  const out1 = new Int32Array(W * (m.h + 1)).fill(-1);
  const out2 = new Int32Array(W * (m.h + 1)).fill(-1);
  let edges = 0;
  const add = (x0, y0, x1, y1) => {
    const from = y0 * W + x0;
    const to = y1 * W + x1;
    if (out1[from] < 0) out1[from] = to; else out2[from] = to;
    edges += 1;
  };
  for (let y = 0; y < m.h; y++) {
    for (let x = 0; x < m.w; x++) {
      if (!inside(x, y)) continue;
      if (!inside(x, y - 1)) add(x, y, x + 1, y);
      if (!inside(x + 1, y)) add(x + 1, y, x + 1, y + 1);
      if (!inside(x, y + 1)) add(x + 1, y + 1, x, y + 1);
      if (!inside(x - 1, y)) add(x, y + 1, x, y);
    }
  }
  const loops = [];
  for (let v = 0; v < out1.length && edges > 0; v++) {
    while (out1[v] >= 0 || out2[v] >= 0) {
      const loop = [];
      let at = v;
      do {
        loop.push(at);
        let next = out1[at];
        if (next >= 0) out1[at] = -1; else { next = out2[at]; out2[at] = -1; }
        edges -= 1;
        at = next;
      } while (at >= 0 && at !== v && (out1[at] >= 0 || out2[at] >= 0));
      const points = loop.map((k) => [m.x0 + (k % W), m.y0 + Math.floor(k / W)]);
      loops.push(simplifyClosed(points, tolerance));
    }
  }
  return loops;
}

function simplify(points, first, last, tolerance, keep) {
  // Douglas-Peucker on points[first..last]: keep the farthest point from the chord while it is
  // farther than the tolerance.
  const [ax, ay] = points[first];
  const [bx, by] = points[last];
  const len = Math.hypot(bx - ax, by - ay) || 1;
  let far = -1;
  let farDist = tolerance;
  for (let i = first + 1; i < last; i++) {
    const d = Math.abs((bx - ax) * (ay - points[i][1]) - (ax - points[i][0]) * (by - ay)) / len;
    if (d > farDist) { far = i; farDist = d; }
  }
  if (far < 0) return;
  keep[far] = 1;
  simplify(points, first, far, tolerance, keep);
  simplify(points, far, last, tolerance, keep);
}

function simplifyClosed(points, tolerance) {
  if (points.length < 8) return points;
  // Split the loop at its first point and the point farthest from it.
  const [x0, y0] = points[0];
  let far = 0;
  for (let i = 1; i < points.length; i++) if (Math.hypot(points[i][0] - x0, points[i][1] - y0) > Math.hypot(points[far][0] - x0, points[far][1] - y0)) far = i;
  const ring = [...points, points[0]];
  const keep = new Uint8Array(ring.length);
  keep[0] = keep[far] = keep[ring.length - 1] = 1;
  simplify(ring, 0, far, tolerance, keep);
  simplify(ring, far, ring.length - 1, tolerance, keep);
  return ring.filter((_, i) => keep[i] && i < ring.length - 1);
}

// The outline as a Path2D of closed polygons in image coordinates.
export function outlinePath(m) {
  const path = new Path2D();
  for (const loop of outlineLoops(m)) {
    path.moveTo(loop[0][0], loop[0][1]);
    for (let i = 1; i < loop.length; i++) path.lineTo(loop[i][0], loop[i][1]);
    path.closePath();
  }
  return path;
}

// Paint crops into an image-sized map: value = index + 1 of the first droplet covering a pixel.
export function paintIndex(width, height, masks) {
  const map = new Int32Array(width * height);
  masks.forEach((m, i) => {
    if (!m) return;
    for (let y = 0; y < m.h; y++) {
      const row = (m.y0 + y) * width + m.x0;
      for (let x = 0; x < m.w; x++) if (m.data[y * m.w + x] && !map[row + x]) map[row + x] = i + 1;
    }
  });
  return map;
}

// -- 16-bit grayscale PNG --------------------------------------------------------------------------

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

export function crc32(bytes) {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type, data) {
  const out = new Uint8Array(12 + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
  out.set(data, 8);
  view.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}

// A PNG of 16-bit gray `values` (Uint16Array, row-major) as a Blob; zlib by CompressionStream.
export async function encodePng16(values, width, height) {
  const raw = new Uint8Array(height * (1 + 2 * width));
  for (let y = 0; y < height; y++) {
    const row = y * (1 + 2 * width); // filter byte 0 (none), then big-endian samples
    for (let x = 0; x < width; x++) {
      const v = values[y * width + x];
      raw[row + 1 + 2 * x] = v >> 8;
      raw[row + 2 + 2 * x] = v & 0xff;
    }
  }
  const zlib = new Uint8Array(await new Response(new Blob([raw]).stream().pipeThrough(new CompressionStream("deflate"))).arrayBuffer());
  const header = new Uint8Array(13);
  const hv = new DataView(header.buffer);
  hv.setUint32(0, width);
  hv.setUint32(4, height);
  header.set([16, 0, 0, 0, 0], 8); // bit depth 16, grayscale, deflate, adaptive filters, no interlace
  const signature = new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10]);
  return new Blob([signature, chunk("IHDR", header), chunk("IDAT", zlib), chunk("IEND", new Uint8Array(0))], { type: "image/png" });
}
