// The mnist-edge browser demo: draw a digit, classify it in this tab with onnxruntime-web (WebAssembly).
//
// Served by `mnist-edge demo`, which maps ./ort/ to node_modules/onnxruntime-web/dist/ (run `npm ci` in
// examples/web once) and ./models/ to an exported artifact folder. Nothing is loaded from elsewhere.
// The model contract (docs/embedding.md): input "image" uint8 [batch, 1, 28, 28], 0 background and 255 ink;
// outputs "logits" and "probabilities" float32 [batch, classes]; class names in metadata "mnist_edge.labels".

import * as ort from "./ort/ort.wasm.min.mjs";
import { fromLogits, normalizeDigit, readContract, readOnnxInfo, rgbaToGray, SIDE } from "./digit.mjs";
import { parseBundle, runSelfTest } from "./selftest.mjs";

// Single-threaded WebAssembly: no SharedArrayBuffer, so no cross-origin-isolation headers needed.
ort.env.wasm.numThreads = 1;
ort.env.wasm.proxy = false;
ort.env.wasm.wasmPaths = new URL("./ort/", import.meta.url).href;

const $ = (id) => document.getElementById(id);
const pad = $("pad");
const ctx = pad.getContext("2d", { willReadFrequently: true });
const preview = $("preview").getContext("2d");
const KEEP = 200; // latency samples kept per precision

// State, also read by the browser test (tests/web/drive.mjs).
const state = {
  ready: false,
  error: null,
  precision: "fp32",
  models: {}, // precision -> { session, contract, info, bytes }
  latency: { fp32: [], int8: [] }, // ms per session.run, most recent last
  result: null, // { label, name, probabilities, precision, ms } of the latest drawing, null when blank
  runs: 0,
  labels: ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
};
let inked = false; // anything drawn since the last clear
let dirty = false; // the drawing changed since the last inference
let running = null; // the inference loop's promise while it runs
window.mnistEdge = {
  state,
  /** Resolves when no inference is pending or running. */
  async idle() {
    while (running) await running;
  },
};

// --- drawing ---------------------------------------------------------------------------------------------

function setupPad() {
  const css = pad.getBoundingClientRect().width || 336;
  const size = Math.round(css * Math.min(window.devicePixelRatio || 1, 2));
  pad.width = pad.height = size;
  clearPad();
}

function clearPad() {
  ctx.fillStyle = "#ffffff";
  ctx.fillRect(0, 0, pad.width, pad.height);
  ctx.strokeStyle = "#111111";
  ctx.fillStyle = "#111111";
  ctx.lineCap = ctx.lineJoin = "round";
  ctx.lineWidth = pad.width / 15; // MNIST strokes are about 1/8-1/10 of the digit's height
  inked = false;
  $("pad-hint").classList.remove("hidden");
  state.result = null;
  preview.fillStyle = "#000";
  preview.fillRect(0, 0, SIDE, SIDE);
  showResult(null);
}

function point(event) {
  const r = pad.getBoundingClientRect();
  return [(event.clientX - r.left) * (pad.width / r.width), (event.clientY - r.top) * (pad.height / r.height)];
}

let last = null;
pad.addEventListener("pointerdown", (event) => {
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  last = point(event);
  ctx.beginPath();
  ctx.arc(last[0], last[1], ctx.lineWidth / 2, 0, 2 * Math.PI);
  ctx.fill();
  inked = true;
  $("pad-hint").classList.add("hidden");
  requestInference();
});
pad.addEventListener("pointermove", (event) => {
  if (!last) return;
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
  ctx.beginPath();
  ctx.moveTo(last[0], last[1]);
  for (const e of events.length ? events : [event]) {
    last = point(e);
    ctx.lineTo(last[0], last[1]);
  }
  ctx.stroke();
  requestInference();
});
const endStroke = () => {
  if (!last) return;
  last = null;
  requestInference();
};
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);
$("clear").addEventListener("click", () => {
  clearPad();
});

$("compare").addEventListener("click", () => compare());

for (const button of document.querySelectorAll(".switch button")) {
  button.addEventListener("click", () => selectPrecision(button.dataset.precision));
}

function selectPrecision(precision) {
  if (!state.models[precision]) return;
  state.precision = precision;
  for (const b of document.querySelectorAll(".switch button")) {
    b.setAttribute("aria-checked", String(b.dataset.precision === precision));
  }
  for (const el of document.querySelectorAll(".lat")) el.classList.toggle("active", el.dataset.precision === precision);
  requestInference();
}

// --- inference -------------------------------------------------------------------------------------------

// Coalesce bursts of pointer events: at most one inference runs, and one more follows if the drawing
// changed meanwhile. The label and bars so update while drawing, as fast as the model allows.
function requestInference() {
  dirty = true;
  if (!running && state.ready) {
    running = (async () => {
      try {
        while (dirty) {
          dirty = false;
          await new Promise(requestAnimationFrame); // let the stroke paint first
          await inferOnce();
        }
      } catch (e) {
        fail(e);
      } finally {
        running = null;
      }
    })();
  }
}

async function timedRun(precision, pixels) {
  const image = new ort.Tensor("uint8", pixels, [1, 1, SIDE, SIDE]);
  const t0 = performance.now();
  const out = await state.models[precision].session.run({ image });
  const ms = performance.now() - t0;
  const samples = state.latency[precision];
  samples.push(ms);
  if (samples.length > KEEP) samples.shift();
  return [out, ms];
}

async function inferOnce() {
  const digit = inked ? normalizeDigit(rgbaToGray(ctx.getImageData(0, 0, pad.width, pad.height).data, pad.width, pad.height), pad.width, pad.height) : null;
  if (!digit) {
    state.result = null;
    showResult(null);
    return;
  }
  drawPreview(digit);
  const precision = state.precision;
  const [out, ms] = await timedRun(precision, digit);
  // Rank by the logits and take softmax(logits / T), as the Python runtime does (see fromLogits in digit.mjs).
  const { label, probabilities } = fromLogits(out.logits.data, state.models[precision].contract.temperature);
  state.result = { label, name: state.labels[label], probabilities, precision, ms };
  state.runs++;
  showResult(state.result);
  showLatency();
}

// A fair side-by-side: both models on the same input (the current drawing, else a blank image),
// alternating run by run so that whatever else the machine does affects both alike. The samples replace
// the ones shown.
async function compare(runs = 100) {
  const button = $("compare");
  button.disabled = true;
  button.textContent = "comparing…";
  await window.mnistEdge.idle();
  try {
    const canvas = ctx.getImageData(0, 0, pad.width, pad.height).data;
    const digit = (inked && normalizeDigit(rgbaToGray(canvas, pad.width, pad.height), pad.width, pad.height)) ||
      new Uint8Array(SIDE * SIDE);
    const precisions = Object.keys(state.models);
    for (const p of precisions) state.latency[p] = [];
    for (let i = 0; i < runs; i++) {
      for (const p of precisions) await timedRun(p, digit);
    }
    showLatency();
  } catch (e) {
    fail(e);
  } finally {
    button.disabled = false;
    button.textContent = `compare, ${runs} runs each`;
  }
}
window.mnistEdge.compare = compare;

function drawPreview(digit) {
  const img = preview.createImageData(SIDE, SIDE);
  for (let i = 0; i < SIDE * SIDE; i++) {
    img.data[4 * i] = img.data[4 * i + 1] = img.data[4 * i + 2] = digit[i];
    img.data[4 * i + 3] = 255;
  }
  preview.putImageData(img, 0, 0);
}

// --- display ---------------------------------------------------------------------------------------------

function buildBars() {
  const bars = $("bars");
  bars.textContent = "";
  state.labels.forEach((name, c) => {
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.id = `bar-${c}`;
    bar.innerHTML = `<div class="bar-pct"></div><div class="bar-track"><div class="bar-fill"></div></div>` +
      `<div class="bar-digit"></div>`;
    bar.querySelector(".bar-digit").textContent = name;
    bars.appendChild(bar);
  });
}

function showResult(result) {
  $("label").textContent = result ? result.name : "–";
  $("confidence").textContent = result
    ? `${(100 * result.probabilities[result.label]).toFixed(1)}% · ${result.precision} · ${result.ms.toFixed(2)} ms`
    : "draw a digit";
  state.labels.forEach((_, c) => {
    const bar = $(`bar-${c}`);
    if (!bar) return;
    const p = result ? result.probabilities[c] : 0;
    bar.dataset.probability = String(p);
    bar.querySelector(".bar-fill").style.height = `${(100 * p).toFixed(1)}%`;
    bar.querySelector(".bar-pct").textContent = result && p >= 0.005 ? `${Math.round(100 * p)}%` : "";
    bar.classList.toggle("best", Boolean(result) && c === result.label);
  });
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

function showLatency() {
  for (const precision of ["fp32", "int8"]) {
    const el = $(`lat-${precision}`);
    const samples = state.latency[precision];
    if (!state.models[precision]) {
      el.querySelector(".lat-ms").textContent = "n/a";
      el.querySelector(".lat-note").textContent = "no file in the artifact folder";
      continue;
    }
    if (!samples.length) continue;
    const m = median(samples);
    el.dataset.medianMs = String(m);
    el.querySelector(".lat-ms").textContent = `${m.toFixed(2)} ms`;
    el.querySelector(".lat-note").textContent =
      `median of ${samples.length} runs · last ${samples[samples.length - 1].toFixed(2)} ms`;
  }
}

function fail(error) {
  console.error(error);
  state.error = String(error?.message ?? error);
  const status = $("status");
  status.className = "status error";
  status.textContent = `error: ${state.error}`;
}

// --- start -----------------------------------------------------------------------------------------------

async function fetchBytes(url) {
  const response = await fetch(url, { cache: "no-cache" });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}

async function sha256hex(bytes) {
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

// The folder's self-test (the same as `mnist-edge verify --self-test`): this browser's onnxruntime-web must
// reproduce the export machine's outputs on the bundle's 100 images before the page classifies anything.
async function selfTest(precision, model, index) {
  if (!index.selftest) return null;
  if (!state.bundle) {
    const bytes = await fetchBytes(index.selftest.url);
    if ((await sha256hex(bytes)) !== index.selftest.sha256) throw new Error("selftest.bin does not match its manifest hash");
    state.bundle = parseBundle(bytes);
  }
  const file = index.files[precision].url.split("/").pop();
  const spec = state.bundle.header.files[file];
  if (!spec || spec.sha256 !== index.files[precision].sha256) throw new Error(`the self-test bundle has no reference for this ${file}`);
  const result = await runSelfTest(ort, model.session, state.bundle, file);
  if (!result.passed) throw new Error(`${file} fails its self-test in this browser: ${result.problem}`);
  return result;
}

async function loadModel(precision, file) {
  const bytes = await fetchBytes(file.url);
  const info = readOnnxInfo(bytes); // ir_version, opsets, metadata_props
  const contract = readContract(info.metadata);
  const session = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"], graphOptimizationLevel: "all" });
  return { session, contract, info, bytes: bytes.length };
}

// Warm up (first runs allocate), then time a few runs on a blank image so both precisions show a latency
// before anything is drawn; drawings add their own samples.
async function calibrate(precision) {
  const blank = new Uint8Array(SIDE * SIDE);
  for (let i = 0; i < 5; i++) await state.models[precision].session.run({ image: new ort.Tensor("uint8", blank, [1, 1, SIDE, SIDE]) });
  for (let i = 0; i < 30; i++) await timedRun(precision, blank);
}

async function start() {
  setupPad();
  buildBars();
  const index = await (await fetch("models/index.json", { cache: "no-cache" })).json();
  for (const precision of ["fp32", "int8"]) {
    const file = index.files[precision];
    const button = $(`use-${precision}`);
    if (!file) {
      button.disabled = true;
      button.title = `no ${precision} model in ${index.model_dir}`;
      continue;
    }
    state.models[precision] = await loadModel(precision, file);
    state.models[precision].selfTest = await selfTest(precision, state.models[precision], index);
  }
  const first = state.models.fp32 ?? state.models.int8;
  if (!first) throw new Error(`no model files in ${index.model_dir}`);
  state.labels = first.contract.labels;
  buildBars();
  for (const precision of Object.keys(state.models)) await calibrate(precision);
  selectPrecision(state.models.fp32 ? "fp32" : "int8");
  showLatency();
  showResult(null);

  const kb = (n) => `${(n / 1024).toFixed(1)} KiB`; // as the mnist-edge commands print sizes
  const opset = first.info.opsets["ai.onnx"] ?? Object.values(first.info.opsets)[0];
  const sizes = Object.entries(state.models).map(([p, m]) => `${p} ${kb(m.bytes)}`).join(", ");
  $("about").textContent = `${first.contract.model} · ${sizes} · ONNX opset ${opset}, IR ${first.info.irVersion} · ` +
    `onnxruntime-web ${ort.env.versions?.web ?? ""} (WebAssembly, 1 thread) · runs entirely in this tab, ` +
    "nothing is uploaded";
  const status = $("status");
  status.className = "status ready";
  const tested = Object.values(state.models).filter((m) => m.selfTest);
  status.textContent = `ready · ${first.contract.model}` +
    (tested.length ? ` · self-test passed (${state.bundle.header.images} images, ${tested.length} file${tested.length > 1 ? "s" : ""})` : "");
  window.mnistEdgeSelfTest = Object.fromEntries(Object.entries(state.models).map(([p, m]) => [p, m.selfTest]));
  state.ready = true;
  if (inked) requestInference();
}

window.addEventListener("resize", () => {
  if (!inked) setupPad();
});
start().catch(fail);
