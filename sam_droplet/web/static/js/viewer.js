// The image canvas: zoom (wheel, + / -, 0 to fit), pan (drag, arrow keys), hover and click in
// image coordinates, and a line tool for the scale bar. Outlines are Path2D layers in image
// coordinates, so zooming redraws them without rebuilding anything.

export class Viewer {
  constructor(canvas, { onHover, onClick, onLine, onKey }) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.handlers = { onHover, onClick, onLine, onKey };
    this.image = null;
    this.layers = [];
    this.highlight = null;
    this.line = null; // scale bar being drawn: [x0, y0, x1, y1] in image pixels
    this.tool = "exclude";
    this.zoom = 1;
    this.tx = 0;
    this.ty = 0;
    this.pending = false;
    new ResizeObserver(() => this.resize()).observe(canvas);
    canvas.addEventListener("wheel", (e) => this.onWheel(e), { passive: false });
    canvas.addEventListener("pointerdown", (e) => this.onDown(e));
    canvas.addEventListener("pointermove", (e) => this.onMove(e));
    canvas.addEventListener("pointerup", (e) => this.onUp(e));
    canvas.addEventListener("pointerleave", () => this.handlers.onHover(null));
    canvas.addEventListener("keydown", (e) => this.onKeyDown(e));
  }

  resize() {
    const dpr = window.devicePixelRatio || 1;
    const { clientWidth: w, clientHeight: h } = this.canvas;
    if (!w || !h) return;
    const first = !this.canvas.width;
    this.canvas.width = Math.round(w * dpr);
    this.canvas.height = Math.round(h * dpr);
    if (first) this.fit(); else this.draw();
  }

  setImage(image) {
    this.image = image;
    this.highlight = null;
    this.fit();
  }

  setLayers(layers) {
    this.layers = layers;
    this.draw();
  }

  setHighlight(path) {
    this.highlight = path;
    this.draw();
  }

  fit() {
    if (!this.image) return this.draw();
    const { clientWidth: w, clientHeight: h } = this.canvas;
    this.zoom = Math.min(w / this.image.width, h / this.image.height) || 1;
    this.tx = (w - this.image.width * this.zoom) / 2;
    this.ty = (h - this.image.height * this.zoom) / 2;
    this.draw();
  }

  zoomAt(factor, sx, sy) {
    const z = Math.min(Math.max(this.zoom * factor, 0.02), 40);
    this.tx = sx - ((sx - this.tx) * z) / this.zoom;
    this.ty = sy - ((sy - this.ty) * z) / this.zoom;
    this.zoom = z;
    this.draw();
  }

  centerOn(x, y, minZoom) {
    if (minZoom && this.zoom < minZoom) this.zoom = minZoom;
    this.tx = this.canvas.clientWidth / 2 - x * this.zoom;
    this.ty = this.canvas.clientHeight / 2 - y * this.zoom;
    this.draw();
  }

  // Canvas pixel (CSS px) of an image point, and the reverse.
  toScreen(x, y) {
    return [x * this.zoom + this.tx, y * this.zoom + this.ty];
  }

  toImage(event) {
    const r = this.canvas.getBoundingClientRect();
    return [(event.clientX - r.left - this.tx) / this.zoom, (event.clientY - r.top - this.ty) / this.zoom];
  }

  draw() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => { this.pending = false; this.render(); });
  }

  render() {
    const ctx = this.ctx;
    const dpr = window.devicePixelRatio || 1;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    if (!this.image) return;
    ctx.setTransform(dpr * this.zoom, 0, 0, dpr * this.zoom, dpr * this.tx, dpr * this.ty);
    ctx.imageSmoothingEnabled = this.zoom < 2;
    ctx.drawImage(this.image, 0, 0);
    for (const layer of this.layers) {
      ctx.strokeStyle = layer.color;
      // One CSS pixel: Skia strokes hairlines on a fast path (about 8x faster than 1.5 px for
      // 1000 outlines), which keeps zooming and panning smooth.
      ctx.lineWidth = (layer.width || 1) / this.zoom;
      ctx.setLineDash(layer.dash ? layer.dash.map((v) => v / this.zoom) : []);
      ctx.stroke(layer.path);
    }
    ctx.setLineDash([]);
    if (this.highlight) {
      ctx.strokeStyle = "#ffd60a";
      ctx.lineWidth = 3.5 / this.zoom;
      ctx.stroke(this.highlight);
    }
    if (this.line) {
      const [x0, y0, x1, y1] = this.line;
      ctx.strokeStyle = "#0af";
      ctx.lineWidth = 2.5 / this.zoom;
      ctx.beginPath();
      ctx.moveTo(x0, y0);
      ctx.lineTo(x1, y1);
      ctx.stroke();
    }
  }

  // -- input -----------------------------------------------------------------------------------

  onWheel(e) {
    e.preventDefault();
    const r = this.canvas.getBoundingClientRect();
    this.zoomAt(Math.exp(-e.deltaY * 0.0015), e.clientX - r.left, e.clientY - r.top);
  }

  onDown(e) {
    if (!this.image || e.button !== 0) return;
    this.canvas.setPointerCapture(e.pointerId);
    this.drag = { x: e.clientX, y: e.clientY, tx: this.tx, ty: this.ty, moved: false, start: this.toImage(e) };
  }

  onMove(e) {
    if (!this.image) return;
    const d = this.drag;
    if (d) {
      if (Math.hypot(e.clientX - d.x, e.clientY - d.y) > 4) d.moved = true;
      if (d.moved && this.tool === "scale") {
        this.line = [...d.start, ...this.toImage(e)];
        this.draw();
      } else if (d.moved) {
        this.tx = d.tx + e.clientX - d.x;
        this.ty = d.ty + e.clientY - d.y;
        this.draw();
      }
      return;
    }
    const [x, y] = this.toImage(e);
    this.handlers.onHover({ x, y, clientX: e.clientX, clientY: e.clientY });
  }

  onUp(e) {
    const d = this.drag;
    this.drag = null;
    if (!d) return;
    if (d.moved && this.tool === "scale" && this.line) {
      this.handlers.onLine(this.line);
    } else if (!d.moved) {
      const [x, y] = this.toImage(e);
      this.handlers.onClick({ x, y, shift: e.shiftKey });
    }
  }

  onKeyDown(e) {
    const step = 60;
    const cx = this.canvas.clientWidth / 2;
    const cy = this.canvas.clientHeight / 2;
    const actions = {
      "+": () => this.zoomAt(1.25, cx, cy),
      "=": () => this.zoomAt(1.25, cx, cy),
      "-": () => this.zoomAt(0.8, cx, cy),
      0: () => this.fit(),
      ArrowLeft: () => { this.tx += step; this.draw(); },
      ArrowRight: () => { this.tx -= step; this.draw(); },
      ArrowUp: () => { this.ty += step; this.draw(); },
      ArrowDown: () => { this.ty -= step; this.draw(); },
    };
    if (actions[e.key] && !e.ctrlKey && !e.metaKey) {
      e.preventDefault();
      actions[e.key]();
    } else if (this.handlers.onKey) {
      this.handlers.onKey(e);
    }
  }
}
