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
