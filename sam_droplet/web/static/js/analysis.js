// Pure functions on droplet records (the JSON the API returns): filters, population statistics,
// ddPCR quantities and occupancy. They mirror sam_droplet/filters.py, measure.py and
// fluorescence.py so the page and the API agree on every count.

// Filter rules in the order sam_droplet.filters.apply_filters runs them; `s` is the length scale
// (um per px when the filters are in um, else 1).
const RULES = [
  ["edge_touching", (f, d) => f.exclude_edge_touching && d.touches_edge],
  ["edge_distance", (f, d, s) => f.min_edge_distance != null && d.min_edge_distance_px * s < f.min_edge_distance],
  ["area_min", (f, d, s) => f.area_min != null && d.area_px * s * s < f.area_min],
  ["area_max", (f, d, s) => f.area_max != null && d.area_px * s * s > f.area_max],
  ["diameter_min", (f, d, s) => f.diameter_min != null && d.equivalent_diameter_px * s < f.diameter_min],
  ["diameter_max", (f, d, s) => f.diameter_max != null && d.equivalent_diameter_px * s > f.diameter_max],
  ["circularity_min", (f, d) => f.circularity_min != null && d.circularity < f.circularity_min],
  ["mean_min", (f, d) => f.mean_min != null && d.intensity_mean < f.mean_min],
  ["mean_max", (f, d) => f.mean_max != null && d.intensity_mean > f.mean_max],
  ["std_min", (f, d) => f.std_min != null && d.intensity_std < f.std_min],
  ["std_max", (f, d) => f.std_max != null && d.intensity_std > f.std_max],
];

export function quantile(sorted, q) {
  // numpy's default (linear) percentile on sorted values.
  if (!sorted.length) return NaN;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

function outlierFlags(values, method, factor) {
  if (method === "none" || !method || values.length < 4) return values.map(() => false);
  if (method === "iqr") {
    const k = factor == null ? 1.5 : factor;
    const sorted = [...values].sort((a, b) => a - b);
    const q1 = quantile(sorted, 0.25);
    const q3 = quantile(sorted, 0.75);
    return values.map((v) => v < q1 - k * (q3 - q1) || v > q3 + k * (q3 - q1));
  }
  const k = factor == null ? 3 : factor;
  const { mean, std } = describe(values);
  return values.map((v) => Math.abs(v - mean) > k * std);
}

// The reason each droplet is removed by `filters` (null when kept), as a Map id -> reason.
export function applyFilters(droplets, filters, umPerPx) {
  const scale = filters.units === "um" ? umPerPx || NaN : 1;
  const reasons = new Map();
  const survivors = [];
  for (const d of droplets) {
    const rule = RULES.find(([, fails]) => fails(filters, d, scale));
    reasons.set(d.id, rule ? rule[0] : null);
    if (!rule) survivors.push(d);
  }
  const flags = outlierFlags(survivors.map((d) => d.equivalent_diameter_px), filters.outliers, filters.outlier_factor);
  survivors.forEach((d, i) => { if (flags[i]) reasons.set(d.id, "outlier"); });
  return reasons;
}

// mean, median, sample SD (ddof 1), CV, min, max, as sam_droplet.measure._stats.
export function describe(values) {
  const n = values.length;
  if (!n) return { n, mean: null, median: null, std: null, cv: null, min: null, max: null };
  const mean = values.reduce((a, b) => a + b, 0) / n;
  const std = n > 1 ? Math.sqrt(values.reduce((a, v) => a + (v - mean) ** 2, 0) / (n - 1)) : 0;
  const sorted = [...values].sort((a, b) => a - b);
  return { n, mean, median: quantile(sorted, 0.5), std, cv: mean > 0 ? std / mean : null, min: sorted[0], max: sorted[n - 1] };
}

export function volumePl(diameterUm) {
  return (Math.PI / 6) * diameterUm ** 3 / 1000;
}

export function histogram(values, bins, lo, hi) {
  if (!values.length) return { edges: [], counts: [] };
  lo = lo ?? Math.min(...values);
  hi = hi ?? Math.max(...values);
  if (hi <= lo) { lo -= 0.5; hi += 0.5; }
  const counts = new Array(bins).fill(0);
  for (const v of values) counts[Math.min(bins - 1, Math.max(0, Math.floor(((v - lo) / (hi - lo)) * bins)))] += 1;
  const edges = Array.from({ length: bins + 1 }, (_, i) => lo + ((hi - lo) * i) / bins);
  return { edges, counts };
}

// -- exact binomial interval -----------------------------------------------------------------------

function logGamma(x) {
  // Lanczos approximation (g = 7, n = 9), accurate to ~1e-15 for x > 0.
  const c = [0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313,
    -176.61502916214059, 12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7];
  if (x < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * x)) - logGamma(1 - x);
  x -= 1;
  let a = c[0];
  const t = x + 7.5;
  for (let i = 1; i < 9; i++) a += c[i] / (x + i);
  return 0.5 * Math.log(2 * Math.PI) + (x + 0.5) * Math.log(t) - t + Math.log(a);
}

function betaContinuedFraction(a, b, x) {
  // Lentz's method for the incomplete beta continued fraction (Numerical Recipes betacf).
  const tiny = 1e-300;
  let c = 1;
  let d = 1 - ((a + b) * x) / (a + 1);
  d = 1 / (Math.abs(d) < tiny ? tiny : d);
  let h = d;
  for (let m = 1; m <= 500; m++) {
    const m2 = 2 * m;
    let aa = (m * (b - m) * x) / ((a + m2 - 1) * (a + m2));
    d = 1 + aa * d; d = 1 / (Math.abs(d) < tiny ? tiny : d);
    c = 1 + aa / c; c = Math.abs(c) < tiny ? tiny : c;
    h *= d * c;
    aa = (-(a + m) * (a + b + m) * x) / ((a + m2) * (a + m2 + 1));
    d = 1 + aa * d; d = 1 / (Math.abs(d) < tiny ? tiny : d);
    c = 1 + aa / c; c = Math.abs(c) < tiny ? tiny : c;
    const del = d * c;
    h *= del;
    if (Math.abs(del - 1) < 1e-15) break;
  }
  return h;
}

// Regularized incomplete beta function I_x(a, b).
export function betaCdf(x, a, b) {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  const front = Math.exp(logGamma(a + b) - logGamma(a) - logGamma(b) + a * Math.log(x) + b * Math.log1p(-x));
  if (x < (a + 1) / (a + b + 2)) return (front * betaContinuedFraction(a, b, x)) / a;
  return 1 - (front * betaContinuedFraction(b, a, 1 - x)) / b;
}

export function betaQuantile(q, a, b) {
  let lo = 0;
  let hi = 1;
  for (let i = 0; i < 100; i++) {
    const mid = (lo + hi) / 2;
    if (betaCdf(mid, a, b) < q) lo = mid; else hi = mid;
  }
  return (lo + hi) / 2;
}

// ddPCR quantities from n droplets, k positive (sam_droplet.fluorescence.ddpcr_statistics).
export function ddpcr(n, k, meanVolumePl, confidence = 0.95) {
  const out = { n, k, p: null, p_ci: null, lambda: null, lambda_ci: null, copies_per_ul: null, copies_per_ul_ci: null, message: null };
  if (n <= 0) { out.message = "no droplets: nothing to quantify"; return out; }
  const alpha = 1 - confidence;
  const p = k / n;
  const pLo = k === 0 ? 0 : betaQuantile(alpha / 2, k, n - k + 1);
  const pHi = k === n ? 1 : betaQuantile(1 - alpha / 2, k + 1, n - k);
  const lam = (q) => (q >= 1 ? Infinity : -Math.log1p(-q));
  Object.assign(out, { p, p_ci: [pLo, pHi], lambda: lam(p), lambda_ci: [lam(pLo), lam(pHi)] });
  const messages = [];
  if (k === n) messages.push("every droplet is positive: the sample is saturated; dilute it and run again");
  if (!(meanVolumePl > 0)) messages.push("no calibration: droplet volume unknown, so no concentration");
  else if (k < n) {
    const perUl = 1e6 / meanVolumePl;
    out.copies_per_ul = lam(p) * perUl;
    out.copies_per_ul_ci = [lam(pLo) * perUl, lam(pHi) * perUl];
  }
  out.message = messages.join("; ") || null;
  return out;
}

// Observed objects per droplet in bins 0, 1, 2, 3+ beside Poisson at the observed mean.
export function occupancy(objectCounts) {
  const n = objectCounts.length;
  const observed = [0, 0, 0, 0];
  for (const c of objectCounts) observed[Math.min(c, 3)] += 1;
  const mean = n ? objectCounts.reduce((a, b) => a + b, 0) / n : 0;
  const pk = [0, 1, 2].map((k) => Math.exp(-mean) * mean ** k / [1, 1, 2][k]);
  const expected = [...pk, Math.max(0, 1 - pk[0] - pk[1] - pk[2])].map((p) => p * n);
  return { n, mean, observed, expected };
}

// -- size distribution and populations (sam_droplet/engine/sizes.py) ------------------------------

// The q-th fraction of `values` weighted by `weights`: the cumulative distribution interpolated at
// its midpoints, P_i = (W_i - w_i / 2) / W (Hazen's definition with equal weights).
export function weightedPercentile(values, weights, q) {
  const order = values.map((_, i) => i).sort((a, b) => values[a] - values[b]);
  const total = weights.reduce((a, b) => a + b, 0);
  if (!order.length || !(total > 0)) return NaN;
  let cum = 0;
  const pos = [];
  const v = [];
  for (const i of order) {
    cum += weights[i];
    pos.push((cum - weights[i] / 2) / total);
    v.push(values[i]);
  }
  if (q <= pos[0]) return v[0];
  if (q >= pos[pos.length - 1]) return v[v.length - 1];
  let k = 1;
  while (pos[k] < q) k++;
  const t = (q - pos[k - 1]) / (pos[k] - pos[k - 1] || 1);
  return v[k - 1] + t * (v[k] - v[k - 1]);
}

// {unit, n, mean, sd, cv, dn10, dn50, dn90, dv10, dv50, dv90, span, d32, d43} of diameters.
export function sizeDistribution(diameters, unit) {
  const n = diameters.length;
  const out = { unit, n };
  const keys = ["mean", "sd", "cv", "dn10", "dn50", "dn90", "dv10", "dv50", "dv90", "span", "d32", "d43"];
  if (!n) { for (const k of keys) out[k] = null; return out; }
  const mean = diameters.reduce((a, b) => a + b, 0) / n;
  const sd = n > 1 ? Math.sqrt(diameters.reduce((a, d) => a + (d - mean) ** 2, 0) / (n - 1)) : null;
  const ones = diameters.map(() => 1);
  const cubes = diameters.map((d) => d ** 3);
  const sum = (f) => diameters.reduce((a, d) => a + f(d), 0);
  const dv = (q) => weightedPercentile(diameters, cubes, q);
  Object.assign(out, {
    mean, sd, cv: sd != null && mean > 0 ? sd / mean : null,
    dn10: weightedPercentile(diameters, ones, 0.1), dn50: weightedPercentile(diameters, ones, 0.5), dn90: weightedPercentile(diameters, ones, 0.9),
    dv10: dv(0.1), dv50: dv(0.5), dv90: dv(0.9),
  });
  out.span = out.dv50 > 0 ? (out.dv90 - out.dv10) / out.dv50 : null;
  out.d32 = sum((d) => d ** 2) > 0 ? sum((d) => d ** 3) / sum((d) => d ** 2) : null;
  out.d43 = sum((d) => d ** 3) > 0 ? sum((d) => d ** 4) / sum((d) => d ** 3) : null;
  return out;
}

// The cumulative distribution of diameters for a plot: sorted diameters and, for each, the
// fraction (by number or by volume) of droplets up to and including it.
export function cumulative(diameters, byVolume) {
  const d = [...diameters].sort((a, b) => a - b);
  const w = d.map((x) => (byVolume ? x ** 3 : 1));
  const total = w.reduce((a, b) => a + b, 0) || 1;
  let cum = 0;
  return d.map((x, i) => { cum += w[i]; return [x, cum / total]; });
}

const MIN_SD = 0.01;
const MAX_COMPONENTS = 4;
const MIN_DROPLETS_TO_SPLIT = 10;
const MIN_SEPARATION = 2.0;
const MIN_POPULATION = 5;

function arraySplit(xs, k) {
  // numpy.array_split: the first n % k groups hold one more.
  const base = Math.floor(xs.length / k);
  const extra = xs.length % k;
  const out = [];
  let at = 0;
  for (let i = 0; i < k; i++) {
    const size = base + (i < extra ? 1 : 0);
    out.push(xs.slice(at, at + size));
    at += size;
  }
  return out;
}

function starts(xs, k) {
  const out = [arraySplit(xs, k)];
  if (k > 1) {
    const gaps = xs.slice(1).map((x, i) => x - xs[i]);
    const order = gaps.map((_, i) => i).sort((a, b) => gaps[a] - gaps[b]);
    const cuts = order.slice(-(k - 1)).map((i) => i + 1).sort((a, b) => a - b);
    const groups = [];
    let at = 0;
    for (const c of [...cuts, xs.length]) { groups.push(xs.slice(at, c)); at = c; }
    out.push(groups);
  }
  return out;
}

function em(x, groups, iterations = 300) {
  const meanOf = (g) => g.reduce((a, b) => a + b, 0) / g.length;
  let mu = groups.map(meanOf);
  let variance = groups.map((g, i) => Math.max(g.reduce((a, v) => a + (v - mu[i]) ** 2, 0) / g.length, MIN_SD ** 2));
  let w = groups.map((g) => g.length / x.length);
  let logLike = -Infinity;
  const k = mu.length;
  for (let it = 0; it < iterations; it++) {
    const resp = [];
    let newLike = 0;
    for (const v of x) {
      const ld = mu.map((m, c) => Math.log(w[c]) - 0.5 * Math.log(2 * Math.PI * variance[c]) - (v - m) ** 2 / (2 * variance[c]));
      const top = Math.max(...ld);
      const norm = top + Math.log(ld.reduce((a, l) => a + Math.exp(l - top), 0));
      newLike += norm;
      resp.push(ld.map((l) => Math.exp(l - norm)));
    }
    const nk = mu.map((_, c) => resp.reduce((a, r) => a + r[c], 0) + 1e-12);
    w = nk.map((n) => n / x.length);
    mu = mu.map((_, c) => resp.reduce((a, r, i) => a + r[c] * x[i], 0) / nk[c]);
    variance = mu.map((m, c) => Math.max(resp.reduce((a, r, i) => a + r[c] * (x[i] - m) ** 2, 0) / nk[c], MIN_SD ** 2));
    const done = Math.abs(newLike - logLike) <= 1e-10 * Math.abs(newLike) + 1e-12;
    logLike = newLike;
    if (done) break;
  }
  const order = mu.map((_, i) => i).sort((a, b) => mu[a] - mu[b]);
  return { w: order.map((i) => w[i]), mu: order.map((i) => mu[i]), variance: order.map((i) => variance[i]), logLike, k };
}

// Ashman's D, or 0 when the lighter component's mean lies within 3 SD of the heavier one.
function separation(wa, ma, va, wb, mb, vb) {
  const heavyVar = wa >= wb ? va : vb;
  if (Math.abs(ma - mb) < 3 * Math.sqrt(heavyVar)) return 0;
  return (Math.SQRT2 * Math.abs(ma - mb)) / Math.sqrt(va + vb);
}

function mergeClose(fit) {
  let groups = fit.mu.map((_, i) => [i]);
  let w = [...fit.w];
  let mu = [...fit.mu];
  let variance = [...fit.variance];
  while (groups.length > 1) {
    const d = mu.slice(0, -1).map((m, i) => separation(w[i], m, variance[i], w[i + 1], mu[i + 1], variance[i + 1]));
    const i = d.indexOf(Math.min(...d));
    if (d[i] > MIN_SEPARATION) break;
    const [wa, wb] = [w[i], w[i + 1]];
    const m = (wa * mu[i] + wb * mu[i + 1]) / (wa + wb);
    const v = (wa * (variance[i] + mu[i] ** 2) + wb * (variance[i + 1] + mu[i + 1] ** 2)) / (wa + wb) - m ** 2;
    groups = [...groups.slice(0, i), [...groups[i], ...groups[i + 1]], ...groups.slice(i + 2)];
    w = [...w.slice(0, i), wa + wb, ...w.slice(i + 2)];
    mu = [...mu.slice(0, i), m, ...mu.slice(i + 2)];
    variance = [...variance.slice(0, i), v, ...variance.slice(i + 2)];
  }
  return groups;
}

// Size populations: a mixture of log-normals on droplet volume, 1 to 4 components by BIC,
// neighbours closer than Ashman's D 2 merged (as sam_droplet.engine.sizes.size_populations).
export function sizePopulations(diameters, unit) {
  const d = diameters.filter((v) => v > 0);
  if (!d.length) return [];
  const x = d.map((v) => 3 * Math.log(v));
  const xs = [...x].sort((a, b) => a - b);
  let best = null;
  let bestBic = Infinity;
  for (let k = 1; k <= Math.min(MAX_COMPONENTS, Math.floor(d.length / MIN_DROPLETS_TO_SPLIT) + 1); k++) {
    const fits = starts(xs, k).map((g) => em(x, g));
    const fit = fits.reduce((a, b) => (b.logLike > a.logLike ? b : a));
    if (k > 1 && Math.min(...fit.w) * d.length < MIN_POPULATION) continue;
    const bic = -2 * fit.logLike + (3 * k - 1) * Math.log(d.length);
    if (bic < bestBic) { bestBic = bic; best = fit; }
  }
  const component = x.map((v) => {
    const ld = best.mu.map((m, c) => Math.log(best.w[c]) - 0.5 * Math.log(2 * Math.PI * best.variance[c]) - (v - m) ** 2 / (2 * best.variance[c]));
    return ld.indexOf(Math.max(...ld));
  });
  const members = mergeClose(best)
    .map((g) => component.map((c, i) => (g.includes(c) ? i : -1)).filter((i) => i >= 0))
    .filter((m) => m.length);
  const volume = d.map((v) => v ** 3);
  const totalVolume = volume.reduce((a, b) => a + b, 0);
  const main = members.reduce((a, b) => (b.length > a.length ? b : a));
  const meanVolume = (m) => m.reduce((a, i) => a + volume[i], 0) / m.length;
  return members.map((m) => {
    const dm = m.map((i) => d[i]);
    const mean = dm.reduce((a, b) => a + b, 0) / dm.length;
    const sd = dm.length > 1 ? Math.sqrt(dm.reduce((a, v) => a + (v - mean) ** 2, 0) / (dm.length - 1)) : null;
    return {
      n: m.length, mean_diameter: mean, cv: sd != null ? sd / mean : null,
      number_fraction: m.length / d.length, volume_fraction: m.reduce((a, i) => a + volume[i], 0) / totalVolume,
      volume_ratio: meanVolume(m) / meanVolume(main), unit,
    };
  });
}
