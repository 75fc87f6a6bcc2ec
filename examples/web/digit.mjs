// digit.mjs: the two things an app needs around an mnist-edge ONNX file, in plain JavaScript (no DOM, no
// Node APIs, no dependencies), so the same file runs in Node and in the browser:
//
//   normalizeDigit(gray, width, height) -> Uint8Array(784) | null
//       a drawn or photographed digit -> the 28x28 uint8 image the model expects (0 background, 255 ink),
//       normalized the way MNIST normalized its own digits (see below).
//   fromLogits(logits, temperature = 1) -> { label, probabilities }
//       the predicted class and the ten probabilities softmax(logits / temperature), from the model's
//       "logits" output and readContract's temperature (the graph's "probabilities" output is the same);
//   readOnnxInfo(bytes) -> { irVersion, producer, opsets, metadata }
//       the model's ir_version, opsets and metadata_props (onnxruntime's JS API does not expose
//       metadata_props, so we read them from the ModelProto bytes: a few lines of protobuf).
//
// examples/node/digit.mjs and examples/web/digit.mjs are the same file (a test checks it); each example
// stays self-contained for users who copy one folder.
//
// MNIST's recipe, as mnist_edge.runtime.images.normalize_digit implements it in Python (this is a port of
// that function, step for step and operation for operation, with Pillow's bilinear resize reproduced
// exactly; the module docstring there explains each step):
//   1. an image over 1000 pixels on a side is averaged over blocks down to that;
//   2. the median of the outermost ring of pixels decides the polarity: a light one (> 127.5) is
//      inverted so ink is bright on black;
//   3. paper: the ring's median when half the ring has exactly that value, else a plane through the ring
//      (a lighting gradient); ink = image - paper;
//   4. noise: from the ring of the ink averaged over boxes of ~1/100 of the image. None: every pixel
//      above the paper is ink, stretched so the brightest is 255. Noisy: the digit is grown from strong
//      ink through pixels 3 robust deviations above the paper (specks stay out), stretched so its
//      99th-percentile pixel is 255;
//   5. crop to the digit's box (strong ink, widened while more ink lies within 40% of its size), resize
//      (bilinear, anti-aliased when shrinking) so the larger side is 20 pixels, keeping the aspect ratio;
//      paste into 28x28 at the integer offset that puts the centre of mass nearest (14, 14).
// Returns null when there is no digit (ink fainter than 32 grey levels above the paper, or than 8
// deviations of its noise).

export const CONTRACT_VERSION = "1"; // mnist_edge/contract.py
export const SIDE = 28;
export const BOX = 20;
export const CENTER = 14.0;
export const MIN_CONTRAST = 32.0;
const MAX_SIDE = 1000;
const SMOOTH_DIVISOR = 100;
const SEED_SIGMAS = 8.0;
const LOW_SIGMAS = 3.0;

function median(values) {
  const s = Float64Array.from(values).sort();
  const n = s.length;
  return n % 2 ? s[(n - 1) >> 1] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

// Python's round() and numpy's rint(): halves go to the even neighbour.
function roundHalfEven(x) {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * Luma of RGBA pixels (canvas ImageData, decoded PNG) as Pillow's convert("L") computes it, with
 * transparency flattened onto white when the visible strokes are dark, onto black when they are light.
 * @param {Uint8Array|Uint8ClampedArray} rgba  4 bytes per pixel
 * @returns {Float64Array} grey levels in [0, 255]
 */
export function rgbaToGray(rgba, width, height) {
  const n = width * height;
  const gray = new Float64Array(n);
  const alpha = new Float64Array(n);
  let minAlpha = 1, weight = 0, weighted = 0;
  for (let i = 0; i < n; i++) {
    const r = rgba[4 * i], g = rgba[4 * i + 1], b = rgba[4 * i + 2];
    gray[i] = (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16; // ITU-R 601, Pillow's integer form
    alpha[i] = rgba[4 * i + 3] / 255;
    minAlpha = Math.min(minAlpha, alpha[i]);
    weight += alpha[i];
    weighted += gray[i] * alpha[i];
  }
  if (minAlpha >= 1) return gray;
  const background = weight === 0 || weighted / weight < 128 ? 255 : 0;
  const f = Math.fround; // float32 arithmetic, as the Python runtime does it, so results match bit for bit
  for (let i = 0; i < n; i++) {
    const a = f(alpha[i]);
    gray[i] = f(f(gray[i] * a) + f(background * f(1 - a)));
  }
  return gray;
}

// Pillow's precompute_coeffs for the bilinear (triangle) filter, support 1, widened when shrinking.
function resampleCoeffs(inSize, outSize) {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1);
  const support = filterscale;
  const out = [];
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1 / filterscale;
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    const k = new Float64Array(Math.max(xmax, 0));
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      const t = Math.abs((x + xmin - center + 0.5) * ss);
      k[x] = t < 1 ? 1 - t : 0;
      ww += k[x];
    }
    if (ww !== 0) for (let x = 0; x < xmax; x++) k[x] /= ww;
    out.push({ xmin, k });
  }
  return out;
}

// Pillow's Image.resize(BILINEAR) of a mode "F" (float32) image: horizontal pass, then vertical, each
// only if that side changes, results stored as float32 in between.
function resizeF(src, w, h, nw, nh) {
  let cur = Float32Array.from(src), cw = w;
  if (nw !== w) {
    const cs = resampleCoeffs(w, nw);
    const tmp = new Float32Array(nw * h);
    for (let y = 0; y < h; y++) {
      for (let xx = 0; xx < nw; xx++) {
        const { xmin, k } = cs[xx];
        let ss = 0;
        for (let x = 0; x < k.length; x++) ss += cur[y * cw + xmin + x] * k[x];
        tmp[y * nw + xx] = ss;
      }
    }
    cur = tmp; cw = nw;
  }
  if (nh !== h) {
    const cs = resampleCoeffs(h, nh);
    const tmp = new Float32Array(cw * nh);
    for (let yy = 0; yy < nh; yy++) {
      const { xmin: ymin, k } = cs[yy];
      for (let x = 0; x < cw; x++) {
        let ss = 0;
        for (let y = 0; y < k.length; y++) ss += cur[(ymin + y) * cw + x] * k[y];
        tmp[yy * cw + x] = ss;
      }
    }
    cur = tmp;
  }
  return Float64Array.from(cur);
}

// The box of the digit's ink (> level), exclusive ends [top, bottom, left, right]: start from the box of
// strong ink (at least half the brightest) and widen it on each side while there is ink within `gap`
// pixels of that side (40% of the strong box's larger side, at least 2): faint edges and detached pieces
// count, as in MNIST's boxes; specks farther away do not.
function inkBox(ink, w, h, level) {
  let t = h, b = 0, l = w, r = 0;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      if (ink[y * w + x] >= 127.5) {
        t = Math.min(t, y); b = Math.max(b, y + 1); l = Math.min(l, x); r = Math.max(r, x + 1);
      }
    }
  }
  const gap = Math.max(2, roundHalfEven(0.4 * Math.max(b - t, r - l)));
  const on = (y, x) => ink[y * w + x] > level;
  const rowHas = (y, x0, x1) => { for (let x = x0; x < x1; x++) if (on(y, x)) return true; return false; };
  const colHas = (x, y0, y1) => { for (let y = y0; y < y1; y++) if (on(y, x)) return true; return false; };
  for (;;) {
    let nt = t, nb = b, nl = l, nr = r;
    let lo = Math.max(l - gap, 0), hi = Math.min(r + gap, w);
    for (let y = Math.max(t - gap, 0); y < t; y++) if (rowHas(y, lo, hi)) { nt = y; break; }
    for (let y = Math.min(b + gap, h) - 1; y >= b; y--) if (rowHas(y, lo, hi)) { nb = y + 1; break; }
    lo = Math.max(t - gap, 0); hi = Math.min(b + gap, h);
    for (let x = Math.max(l - gap, 0); x < l; x++) if (colHas(x, lo, hi)) { nl = x; break; }
    for (let x = Math.min(r + gap, w) - 1; x >= r; x--) if (colHas(x, lo, hi)) { nr = x + 1; break; }
    if (nt === t && nb === b && nl === l && nr === r) return [t, b, l, r];
    [t, b, l, r] = [nt, nb, nl, nr];
  }
}

// The outermost ring of pixels: top row, bottom row, then the side columns without the corners.
function ring(a, w, h) {
  const out = [];
  for (let x = 0; x < w; x++) out.push(a[x]);
  if (h > 1) for (let x = 0; x < w; x++) out.push(a[(h - 1) * w + x]);
  for (let y = 1; y < h - 1; y++) {
    out.push(a[y * w]);
    if (w > 1) out.push(a[y * w + w - 1]);
  }
  return out;
}

// An image over MAX_SIDE pixels averaged over f x f blocks, one slice at a time as the Python code adds.
function shrink(g, w, h) {
  const f = Math.min(Math.ceil(Math.max(w, h) / MAX_SIDE), Math.min(w, h));
  if (f === 1) return [g, w, h];
  const nw = Math.floor(w / f), nh = Math.floor(h / f);
  const acc = new Float64Array(nw * nh);
  for (let dy = 0; dy < f; dy++) {
    for (let dx = 0; dx < f; dx++) {
      for (let y = 0; y < nh; y++) for (let x = 0; x < nw; x++) acc[y * nw + x] += g[(y * f + dy) * w + x * f + dx];
    }
  }
  return [acc.map((v) => v / (f * f)), nw, nh];
}

// The paper's level per pixel index: the ring's median when half the ring has exactly that value, else a
// plane through the ring (slopes from the medians of opposite sides, offset centring the ring).
function background(g, w, h) {
  const rg = ring(g, w, h);
  const level = median(rg);
  let same = 0;
  for (const v of rg) if (v === level) same++;
  if (same / rg.length >= 0.5 || h < 3 || w < 3) return () => level;
  const col = (x) => { const c = []; for (let y = 0; y < h; y++) c.push(g[y * w + x]); return c; };
  const dx = (median(col(w - 1)) - median(col(0))) / (w - 1);
  const dy = (median(g.subarray((h - 1) * w, h * w)) - median(g.subarray(0, w))) / (h - 1);
  const plane = new Float64Array(w * h);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) plane[y * w + x] = y * dy + x * dx;
  const pr = ring(plane, w, h);
  const offset = median(rg.map((v, i) => v - pr[i]));
  return (i) => plane[i] + offset;
}

// The mean over a (2 radius + 1)-square box around each pixel (edges replicated), via summed areas
// computed in the same order as numpy's cumsum along rows, then columns.
function boxMean(a, w, h, radius) {
  const k = 2 * radius + 1, pw = w + 2 * radius, ph = h + 2 * radius;
  const s = new Float64Array((ph + 1) * (pw + 1));
  const at = (y, x) => a[Math.min(Math.max(y - radius, 0), h - 1) * w + Math.min(Math.max(x - radius, 0), w - 1)];
  for (let y = 0; y < ph; y++) for (let x = 0; x < pw; x++) s[(y + 1) * (pw + 1) + x + 1] = s[y * (pw + 1) + x + 1] + at(y, x);
  for (let y = 1; y <= ph; y++) for (let x = 1; x <= pw; x++) s[y * (pw + 1) + x] = s[y * (pw + 1) + x - 1] + s[y * (pw + 1) + x];
  const out = new Float64Array(w * h);
  const S = (y, x) => s[y * (pw + 1) + x];
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) out[y * w + x] = (S(y + k, x + k) - S(y, x + k) - S(y + k, x) + S(y, x)) / (k * k);
  }
  return out;
}

// The pixels of `allowed` 4-connected to a seed (hysteresis): whole runs along rows, then columns, until
// nothing changes.
function grow(seeds, allowed, w, h) {
  let m = seeds.map((v, i) => v & allowed[i]);
  for (;;) {
    const next = Uint8Array.from(m);
    for (let y = 0; y < h; y++) fillRuns(next, allowed, y * w, 1, w);
    for (let x = 0; x < w; x++) fillRuns(next, allowed, x, w, h);
    let same = true;
    for (let i = 0; i < m.length; i++) if (next[i] !== m[i]) { same = false; break; }
    if (same) return m;
    m = next;
  }
}

function fillRuns(m, allowed, start, step, count) {
  let i = 0;
  while (i < count) {
    if (!allowed[start + i * step]) { i++; continue; }
    let j = i, hit = false;
    while (j < count && allowed[start + j * step]) { if (m[start + j * step]) hit = true; j++; }
    if (hit) for (let q = i; q < j; q++) m[start + q * step] = 1;
    i = j;
  }
}

/**
 * A grey image of one digit (any size, dark-on-light or light-on-dark) -> MNIST-style 28x28.
 * @param {ArrayLike<number>} gray  width*height grey levels in [0, 255], row-major
 * @returns {Uint8Array|null} 784 pixels, or null if the image holds no digit
 */
export function normalizeDigit(gray, width, height) {
  if (!(width > 0 && height > 0) || gray.length !== width * height) {
    throw new Error(`normalizeDigit: expected ${width}x${height} grey levels, got ${gray.length}`);
  }
  let g = Float64Array.from(gray);
  [g, width, height] = shrink(g, width, height);
  const inverted = median(ring(g, width, height)) > 127.5;
  if (inverted) g = g.map((v) => 255.0 - v);
  const n = width * height;
  const paperLevel = background(g, width, height);
  const res = new Float64Array(n);
  for (let i = 0; i < n; i++) res[i] = g[i] - paperLevel(i);
  const smooth = boxMean(res, width, height, Math.max(1, roundHalfEven(Math.max(width, height) / SMOOTH_DIVISOR)));
  const sring = ring(smooth, width, height);
  const bg = median(sring);
  let spread = 1.4826 * median(sring.map((v) => Math.abs(v - bg))); // robust standard deviation
  let ink;
  if (spread === 0) {
    let peak = -Infinity;
    for (const v of res) peak = Math.max(peak, v);
    if (peak < MIN_CONTRAST) return null;
    ink = res.map((v) => Math.min(Math.max(v / peak, 0), 1) * 255);
  } else {
    spread = Math.max(spread, 1.0);
    let peak = -Infinity;
    for (const v of smooth) peak = Math.max(peak, v);
    if (peak - bg < Math.max(MIN_CONTRAST, SEED_SIGMAS * spread)) return null;
    const seedAt = bg + Math.max(SEED_SIGMAS * spread, 0.5 * (peak - bg)), lowAt = bg + LOW_SIGMAS * spread;
    const digit = grow(smooth.map((v) => (v >= seedAt ? 1 : 0)), smooth.map((v) => (v > lowAt ? 1 : 0)), width, height);
    const values = new Float64Array(n), inside = [];
    for (let i = 0; i < n; i++) {
      if (digit[i]) { values[i] = Math.max(res[i] - bg, 0.0); inside.push(values[i]); }
    }
    const sorted = Float64Array.from(inside).sort();
    const top = sorted[Math.floor(0.99 * (sorted.length - 1))];
    if (!(top > 0)) return null;
    ink = values.map((v) => Math.min(v / top, 1.0) * 255.0);
  }
  const [t, b, l, r] = inkBox(ink, width, height, spread === 0 ? 0 : 0.25 * 255);
  const h = b - t, w = r - l;
  let crop = new Float64Array(h * w);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) crop[y * w + x] = ink[(t + y) * width + l + x];
  const scale = BOX / Math.max(h, w);
  const nh = Math.max(1, roundHalfEven(h * scale)), nw = Math.max(1, roundHalfEven(w * scale));
  if (nh !== h || nw !== w) crop = resizeF(crop, w, h, nw, nh).map((v) => Math.min(Math.max(v, 0), 255));
  let total = 0, sy = 0, sx = 0;
  for (let y = 0; y < nh; y++) {
    for (let x = 0; x < nw; x++) {
      const v = crop[y * nw + x];
      total += v; sy += v * y; sx += v * x;
    }
  }
  if (total <= 0) return null;
  const top = Math.min(Math.max(Math.floor(CENTER - sy / total + 0.5), 0), SIDE - nh);
  const left = Math.min(Math.max(Math.floor(CENTER - sx / total + 0.5), 0), SIDE - nw);
  const out = new Uint8Array(SIDE * SIDE);
  for (let y = 0; y < nh; y++) {
    for (let x = 0; x < nw; x++) {
      out[(top + y) * SIDE + left + x] = Math.min(Math.max(roundHalfEven(crop[y * nw + x]), 0), 255);
    }
  }
  return out;
}

/**
 * The predicted class and the probabilities from one row of the "logits" output: the class with the highest
 * logit (the first on ties, as numpy's argmax) and the softmax, computed here in double precision. For our
 * files this equals the graph's "probabilities" output to float rounding; ranking by the logits also stays
 * right for an int8 file whose Softmax was quantized too (probabilities in steps of 1/255, with ties).
 * @param {ArrayLike<number>} logits  ten numbers
 * @returns {{label: number, probabilities: number[]}}
 */
export function fromLogits(logits, temperature = 1) {
  let label = 0;
  for (let c = 1; c < logits.length; c++) if (logits[c] > logits[label]) label = c;
  const e = Array.from(logits, (v) => Math.exp((v - logits[label]) / temperature));
  const sum = e.reduce((a, b) => a + b, 0);
  return { label, probabilities: e.map((v) => v / sum) };
}

// --- ONNX ModelProto: the few top-level fields an app wants, without a protobuf library -------------------

function readVarint(buf, pos) {
  let value = 0, mul = 1, byte;
  do {
    if (pos >= buf.length) throw new Error("ONNX file is truncated (varint runs past the end)");
    byte = buf[pos++];
    value += (byte & 0x7f) * mul;
    mul *= 128;
  } while (byte & 0x80);
  return [value, pos];
}

// Yields [fieldNumber, wireType, value, ...] for each field of one protobuf message in buf[start, end).
function* fields(buf, start, end) {
  let pos = start;
  while (pos < end) {
    let key, value;
    [key, pos] = readVarint(buf, pos);
    const field = Math.floor(key / 8), wire = key % 8;
    if (wire === 0) {
      [value, pos] = readVarint(buf, pos);
      yield [field, wire, value];
    } else if (wire === 2) {
      let len;
      [len, pos] = readVarint(buf, pos);
      if (pos + len > end) throw new Error("ONNX file is truncated (a field runs past the end)");
      yield [field, wire, buf.subarray(pos, pos + len)];
      pos += len;
    } else if (wire === 1) {
      pos += 8;
    } else if (wire === 5) {
      pos += 4;
    } else {
      throw new Error(`not an ONNX model (protobuf wire type ${wire} at byte ${pos})`);
    }
  }
  if (pos !== end) throw new Error("ONNX file is truncated");
}

const utf8 = new TextDecoder("utf-8");

/**
 * ir_version, producer, opset imports and metadata_props of an ONNX model, read from its bytes.
 * @param {Uint8Array} bytes  the .onnx file
 * @returns {{irVersion: number, producer: string, opsets: Object<string, number>, metadata: Object<string, string>}}
 */
export function readOnnxInfo(bytes) {
  const buf = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  const info = { irVersion: 0, producer: "", opsets: {}, metadata: {} };
  const str = (b) => utf8.decode(b);
  for (const [field, wire, value] of fields(buf, 0, buf.length)) {
    if (field === 1 && wire === 0) info.irVersion = value; // ModelProto.ir_version
    else if (field === 2 && wire === 2) info.producer = str(value) + info.producer; // producer_name
    else if (field === 3 && wire === 2) info.producer += " " + str(value); // producer_version
    else if (field === 8 && wire === 2) { // opset_import: OperatorSetIdProto {domain = 1, version = 2}
      let domain = "", version = 0;
      for (const [f, w, v] of fields(value, 0, value.length)) {
        if (f === 1 && w === 2) domain = str(v);
        else if (f === 2 && w === 0) version = v;
      }
      info.opsets[domain || "ai.onnx"] = version;
    } else if (field === 14 && wire === 2) { // metadata_props: StringStringEntryProto {key = 1, value = 2}
      let k = "", v2 = "";
      for (const [f, w, v] of fields(value, 0, value.length)) {
        if (f === 1 && w === 2) k = str(v);
        else if (f === 2 && w === 2) v2 = str(v);
      }
      info.metadata[k] = v2;
    }
  }
  if (!info.irVersion) throw new Error("not an ONNX model (no ir_version)");
  return info;
}

/**
 * The mnist-edge contract read from metadata_props: model name, precision, class names, input spec.
 * JSON-valued keys are parsed; a model without the contract keys, or of another contract version, throws.
 */
export function readContract(metadata) {
  const need = ["contract", "model", "labels", "input", "outputs", "normalization"].map((k) => "mnist_edge." + k);
  const missing = need.filter((k) => !(k in metadata));
  if (missing.length) throw new Error(`not an mnist-edge model: metadata lacks ${missing.join(", ")}`);
  if (metadata["mnist_edge.contract"] !== CONTRACT_VERSION) {
    throw new Error(`mnist-edge contract version ${JSON.stringify(metadata["mnist_edge.contract"])}, this code ` +
      `reads ${JSON.stringify(CONTRACT_VERSION)}`);
  }
  const json = (k) => {
    if (metadata[k] === undefined) return undefined;
    try {
      return JSON.parse(metadata[k]);
    } catch {
      throw new Error(`metadata ${k} is not JSON: ${metadata[k].slice(0, 80)}`);
    }
  };
  const labels = json("mnist_edge.labels");
  // One name per output class: the ten digits for the zoo, any number from 2 for a model of your own.
  if (!Array.isArray(labels) || labels.length < 2 || !labels.every((x) => typeof x === "string")) {
    throw new Error("metadata mnist_edge.labels is not a list of class names");
  }
  const input = json("mnist_edge.input");
  if (input?.name !== "image" || input?.dtype !== "uint8") {
    throw new Error(`metadata mnist_edge.input is ${metadata["mnist_edge.input"]}, expected image, uint8`);
  }
  return {
    contract: metadata["mnist_edge.contract"],
    model: metadata["mnist_edge.model"],
    precision: metadata["mnist_edge.precision"] ?? "unknown",
    labels,
    input,
    outputs: json("mnist_edge.outputs"),
    normalization: json("mnist_edge.normalization"),
    quantization: json("mnist_edge.quantization"),
    // probabilities = softmax(logits / temperature); files exported before calibration have no key: 1
    temperature: json("mnist_edge.temperature")?.temperature ?? 1,
  };
}
