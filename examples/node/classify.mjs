#!/usr/bin/env node
// classify.mjs: classify handwritten digits with an exported mnist-edge model and onnxruntime-node.
//
// Everything it needs is the artifact folder (model.onnx, model.int8.onnx, manifest.json) and the contract
// in docs/embedding.md: input "image" uint8 [batch, 1, 28, 28] (0 background, 255 ink), outputs "logits"
// and "probabilities" float32 [batch, classes], class names in the metadata key "mnist_edge.labels".
//
//   npm ci                                             # once (ONNXRUNTIME_NODE_INSTALL=skip when offline)
//   node classify.mjs digit.png photo.jpg scans/       # PNG and JPEG files, or folders of them
//   node classify.mjs --idx t10k-images-idx3-ubyte.gz --count 1000   # the MNIST test file (gz or plain)
//   node classify.mjs --help
//
// Prints one line per image (file, label, probability per precision), or with --json one JSON document:
// per precision, the model's metadata and the predicted labels. A file it cannot use gets an error line of
// its own on stderr (images.mjs says what it reads) and the others are still classified; the exit status is
// then 1, as with `mnist-edge predict`.
// Before classifying, each model runs the folder's self-test (selftest.bin, listed in manifest.json: 100
// images with the export machine's reference outputs); a model that fails it is refused.

import { createHash } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { gunzipSync } from "node:zlib";

import ort from "onnxruntime-node";

import { fromLogits, normalizeDigit, readContract, readOnnxInfo, SIDE } from "../web/digit.mjs"; // one copy, shared with the browser demo
import { parseBundle, runSelfTest } from "../web/selftest.mjs"; // the same self-test as `mnist-edge verify --self-test`
import { expandPaths, ImageError, READS, readGray } from "./images.mjs";

const HERE = dirname(fileURLToPath(import.meta.url));
const FILES = { fp32: "model.onnx", int8: "model.int8.onnx" };
const USAGE = `usage: node classify.mjs [options] [IMAGE...]

Classify digits with an exported mnist-edge model (onnxruntime-node); prints one line per image.

inputs (one of):
  IMAGE...               ${READS} files or folders of them, one digit each (normalized like MNIST: 20x20
                         box, centre of mass); any other file gets an error line and the rest go on
  --idx FILE             an MNIST IDX images file (.gz or plain), e.g. t10k-images-idx3-ubyte.gz;
                         its labels file beside it, if present, gives the accuracy

options:
  --model-dir DIR        artifact folder (default: exported/bn_cnn in the working directory, else in
                         the repository this example lives in)
  --precision P          fp32, int8 or both (default: both; a missing file is an error only if asked for)
  --offset N, --count N  which images of the IDX file (default: all from 0)
  --batch N              images per session.run (default 1000)
  --threads N            intra-op threads (default: onnxruntime's)
  --json                 print one JSON document: metadata, labels, confidence, self-test per precision
  --probabilities        with --json: include each image's ten probabilities
  --emit-inputs          with --json: include each 28x28 model input (base64 of 784 bytes)
  --out FILE             write the JSON document there (implies --json; stdout then stays empty)
`;

function fail(message) {
  process.stderr.write(`classify.mjs: error: ${message}\n`);
  process.exit(1);
}

function parseCli(argv) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        "model-dir": { type: "string" },
        precision: { type: "string", default: "both" },
        idx: { type: "string" },
        offset: { type: "string", default: "0" },
        count: { type: "string" },
        batch: { type: "string", default: "1000" },
        threads: { type: "string" },
        json: { type: "boolean", default: false },
        probabilities: { type: "boolean", default: false },
        "emit-inputs": { type: "boolean", default: false },
        out: { type: "string" },
        help: { type: "boolean", short: "h", default: false },
      },
    });
  } catch (e) {
    fail(`${e.message}\n\n${USAGE}`);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  const int = (name, min) => {
    if (values[name] === undefined) return undefined;
    const n = Number(values[name]);
    if (!Number.isInteger(n) || n < min) fail(`--${name} must be an integer >= ${min}, got ${values[name]}`);
    return n;
  };
  const precisions = { both: ["fp32", "int8"], fp32: ["fp32"], int8: ["int8"] }[values.precision];
  if (!precisions) fail(`--precision must be fp32, int8 or both, got ${values.precision}`);
  if (!values.idx && positionals.length === 0) fail(`give image files or --idx FILE\n\n${USAGE}`);
  if (values.idx && positionals.length) fail("give image files or --idx FILE, not both");
  return {
    modelDir: values["model-dir"],
    precisions,
    explicitPrecision: values.precision !== "both",
    idx: values.idx,
    images: positionals,
    offset: int("offset", 0),
    count: int("count", 0),
    batch: int("batch", 1),
    threads: int("threads", 1),
    probabilities: values.probabilities,
    emitInputs: values["emit-inputs"],
    json: values.json || values.out !== undefined,
    out: values.out,
  };
}

function defaultModelDir() {
  const candidates = [resolve("exported/bn_cnn"), resolve(HERE, "../../exported/bn_cnn")];
  const found = candidates.find((d) => existsSync(join(d, FILES.fp32)) || existsSync(join(d, FILES.int8)));
  if (!found) {
    fail(`no model: neither ${candidates.join(" nor ")} holds ${FILES.fp32}; pass --model-dir DIR or create it ` +
      "with `mnist-edge export --model bn_cnn --quantize`");
  }
  return found;
}

// --- inputs ------------------------------------------------------------------------------------------------

function readMaybeGz(path) {
  let data;
  try {
    data = readFileSync(path);
  } catch (e) {
    fail(`${path}: ${e.code === "ENOENT" ? "no such file" : e.message}`);
  }
  if (data[0] === 0x1f && data[1] === 0x8b) {
    try {
      data = gunzipSync(data, { maxOutputLength: 256 * 1024 * 1024 });
    } catch (e) {
      fail(`${path}: not a valid gzip file (${e.message})`);
    }
  }
  return data;
}

// IDX: big-endian magic (0x00000803 images, 0x00000801 labels), then one uint32 per dimension, then bytes.
function parseIdx(data, path, kind) {
  const magic = kind === "images" ? 0x803 : 0x801;
  const dims = kind === "images" ? 3 : 1;
  const header = 4 + 4 * dims;
  if (data.length < header) fail(`${path}: ${data.length} bytes is shorter than the IDX ${kind} header`);
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const found = view.getUint32(0);
  if (found !== magic) {
    fail(`${path}: IDX magic 0x${found.toString(16).padStart(8, "0")}, expected 0x${magic.toString(16).padStart(8, "0")} (${kind})`);
  }
  const shape = Array.from({ length: dims }, (_, i) => view.getUint32(4 + 4 * i));
  if (kind === "images" && (shape[1] !== SIDE || shape[2] !== SIDE)) {
    fail(`${path}: images are ${shape[1]}x${shape[2]}, expected ${SIDE}x${SIDE}`);
  }
  const expected = header + shape.reduce((a, b) => a * b, 1);
  if (data.length !== expected) fail(`${path}: ${data.length} bytes, the header says ${expected}`);
  return { count: shape[0], bytes: data.subarray(header) };
}

function labelsPathFor(imagesPath) {
  const dir = dirname(imagesPath);
  const name = basename(imagesPath).replace(/\.gz$/, "").replace("images-idx3", "labels-idx1");
  return [join(dir, name), join(dir, name + ".gz")].find((p) => p !== imagesPath && existsSync(p));
}

function loadIdx(opts) {
  const images = parseIdx(readMaybeGz(opts.idx), opts.idx, "images");
  const start = opts.offset;
  if (start > images.count) fail(`--offset ${start} is past the ${images.count} images in ${opts.idx}`);
  const count = Math.min(opts.count ?? images.count - start, images.count - start);
  const px = SIDE * SIDE;
  const pixels = images.bytes.subarray(start * px, (start + count) * px);
  let truth = null;
  const labelsPath = labelsPathFor(opts.idx);
  if (labelsPath) {
    const labels = parseIdx(readMaybeGz(labelsPath), labelsPath, "labels");
    if (labels.count !== images.count) fail(`${labelsPath}: ${labels.count} labels for ${images.count} images`);
    truth = Array.from(labels.bytes.subarray(start, start + count));
  }
  return {
    source: { kind: "idx", path: opts.idx, labels_path: labelsPath ?? null, offset: start, count },
    count, pixels, truth,
  };
}

// Each file on its own: one that cannot be read or holds no digit is listed in `failed` with one line naming
// it, and the others are still classified.
function loadImages(items) {
  const files = [], failed = [], digits = [], order = []; // order: every file as given, {image, index | error}
  for (const { path, error } of expandPaths(items)) {
    try {
      if (error) throw new ImageError(error);
      const { gray, width, height } = readGray(path);
      const digit = normalizeDigit(gray, width, height);
      if (!digit) throw new ImageError(`${path}: no digit found (the image is blank or its ink too faint)`);
      order.push({ image: path, index: files.length });
      files.push(path);
      digits.push(digit);
    } catch (e) {
      if (!(e instanceof ImageError)) throw e;
      order.push({ image: path, error: e.message });
      failed.push({ image: path, error: e.message });
    }
  }
  const pixels = new Uint8Array(digits.length * SIDE * SIDE);
  digits.forEach((d, i) => pixels.set(d, i * SIDE * SIDE));
  return { source: { kind: "images", files, failed }, count: files.length, pixels, truth: null, order };
}

// --- models ------------------------------------------------------------------------------------------------

// The artifact manifest (manifest.json, format mnist-edge-manifest/1) records each file's SHA-256 and size
// under files[NAME]: a file whose bytes differ is refused before anything parses it.
function manifestEntry(dir, name, optional = false) {
  const path = join(dir, "manifest.json");
  if (!existsSync(path)) return undefined;
  let manifest;
  try {
    manifest = JSON.parse(readFileSync(path, "utf8"));
  } catch (e) {
    fail(`${path} is not valid JSON (${e.message})`);
  }
  const entry = manifest?.files?.[name];
  if (optional && entry === undefined) return undefined;
  if (typeof entry?.sha256 !== "string") fail(`${path} does not list ${name} with its sha256`);
  return entry;
}

async function loadModel(dir, precision, threads) {
  const path = join(dir, FILES[precision]);
  const bytes = readFileSync(path);
  const sha256 = createHash("sha256").update(bytes).digest("hex");
  const recorded = manifestEntry(dir, FILES[precision]);
  if (recorded && (recorded.sha256 !== sha256 || (recorded.size ?? bytes.length) !== bytes.length)) {
    fail(`${path}: SHA-256 ${sha256} (${bytes.length} bytes) differs from the manifest's ${recorded.sha256} ` +
      `(${recorded.size} bytes); the file is damaged or replaced`);
  }
  let info, contract;
  try {
    info = readOnnxInfo(bytes);
    contract = readContract(info.metadata);
  } catch (e) {
    fail(`${path}: ${e.message}`);
  }
  const options = { executionProviders: ["cpu"], graphOptimizationLevel: "all" };
  if (threads) options.intraOpNumThreads = threads;
  const session = await ort.InferenceSession.create(bytes, options);
  return {
    precision,
    session,
    contract,
    report: {
      precision,
      path,
      bytes: bytes.length,
      sha256,
      manifest_verified: Boolean(recorded),
      ir_version: info.irVersion,
      opsets: info.opsets,
      producer: info.producer,
      metadata: info.metadata,
      inputs: session.inputNames,
      outputs: session.outputNames,
    },
  };
}

// The folder's self-test bundle, hash-checked against the manifest; null when the manifest lists none.
function loadBundle(dir) {
  const entry = manifestEntry(dir, "selftest.bin", true);
  if (!entry) return null;
  const path = join(dir, "selftest.bin");
  const bytes = readFileSync(path);
  const sha256 = createHash("sha256").update(bytes).digest("hex");
  if (sha256 !== entry.sha256) fail(`${path}: SHA-256 ${sha256} differs from the manifest's ${entry.sha256}`);
  try {
    return parseBundle(bytes);
  } catch (e) {
    fail(`${path}: ${e.message}`);
  }
}

async function selfTest(model, bundle) {
  const file = FILES[model.precision];
  const spec = bundle.header.files[file];
  if (!spec) fail(`the self-test bundle has no reference for ${file}`);
  if (spec.sha256 !== model.report.sha256) fail(`${model.report.path}: the self-test bundle's references are for other bytes`);
  const t0 = process.hrtime.bigint();
  const result = await runSelfTest(ort, model.session, bundle, file);
  result.ms = Number((Number(process.hrtime.bigint() - t0) / 1e6).toFixed(1));
  result.images = bundle.header.images;
  if (!result.passed) fail(`${model.report.path} fails its self-test on ${bundle.header.images} images: ${result.problem}`);
  return result;
}

async function classify(model, data, opts) {
  const px = SIDE * SIDE;
  const labels = new Array(data.count);
  const confidence = new Array(data.count);
  const probabilities = opts.probabilities ? new Array(data.count) : null;
  const t0 = process.hrtime.bigint();
  for (let start = 0; start < data.count; start += opts.batch) {
    const n = Math.min(opts.batch, data.count - start);
    const image = new ort.Tensor("uint8", data.pixels.subarray(start * px, (start + n) * px), [n, 1, SIDE, SIDE]);
    const out = await model.session.run({ image });
    const z = out.logits.data; // float32 [n, classes]: one per name in the metadata's labels
    const k = model.contract.labels.length;
    for (let i = 0; i < n; i++) {
      // Rank by the logits and take softmax(logits / T), as the Python runtime does (see fromLogits).
      const { label: best, probabilities: p } = fromLogits(z.subarray(i * k, i * k + k), model.contract.temperature);
      labels[start + i] = best;
      confidence[start + i] = Number(p[best].toFixed(6));
      if (probabilities) probabilities[start + i] = p.map((v) => Number(v.toPrecision(7)));
    }
  }
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  const result = {
    ...model.report,
    class_names: model.contract.labels,
    labels,
    names: labels.map((c) => model.contract.labels[c]),
    confidence,
    ms_total: Number(ms.toFixed(3)),
    ms_per_image: Number((ms / Math.max(data.count, 1)).toFixed(4)),
  };
  if (probabilities) result.probabilities = probabilities;
  if (data.truth) {
    const correct = labels.reduce((a, c, i) => a + (c === data.truth[i] ? 1 : 0), 0);
    result.accuracy = Number((correct / Math.max(data.count, 1)).toFixed(6));
  }
  return result;
}

// JSON with arrays of numbers or strings kept on one line (1,000 labels are one line, not 1,000).
function stringify(value) {
  return JSON.stringify(value, null, 2).replace(/\[\s+((?:-?[\d.e+-]+|"[^"\n]*")(?:,\s+(?:-?[\d.e+-]+|"[^"\n]*"))*)\s+\]/g,
    (_, inner) => `[${inner.replace(/,\s+/g, ", ")}]`);
}

// --- output ------------------------------------------------------------------------------------------------

function modelLine(m) {
  const check = m.manifest_verified ? "hash-checked against manifest.json" : "not hash-checked (no manifest.json)";
  const st = m.self_test ? `self-test passed on ${m.self_test.images} images` : "no self-test bundle";
  return `model: ${m.path} (${m.metadata["mnist_edge.model"]}, ${m.precision}, ${check}, ${st})`;
}

// One line per image: "file: label (probability)", each precision's answer when there are two.
function imageLines(data, models) {
  const precisions = Object.keys(models);
  const answer = (m, i) => `${m.names[i]} (${m.confidence[i].toFixed(3)})`;
  return data.order.filter((e) => e.error === undefined).map(({ image, index }) => `${image}: ` + (precisions.length === 1
    ? answer(models[precisions[0]], index)
    : precisions.map((p) => `${p} ${answer(models[p], index)}`).join(", ")));
}

function idxLines(data, models) {
  return Object.entries(models).map(([p, m]) => `${p} (${basename(m.path)}): ${data.count} images` +
    (m.accuracy !== undefined ? `, accuracy ${(100 * m.accuracy).toFixed(2)}%` : ", no labels file beside it") +
    `, ${m.ms_per_image} ms/image (--json for every label)`);
}

function report(opts, data, result) {
  if (opts.json) {
    const text = stringify(result) + "\n";
    if (opts.out) writeFileSync(opts.out, text);
    else process.stdout.write(text);
  } else {
    for (const m of Object.values(result.models)) process.stderr.write(modelLine(m) + "\n");
    const lines = opts.idx ? idxLines(data, result.models) : imageLines(data, result.models);
    if (lines.length) process.stdout.write(lines.join("\n") + "\n");
  }
}

async function main() {
  const opts = parseCli(process.argv.slice(2));
  const dir = resolve(opts.modelDir ?? defaultModelDir());
  const precisions = opts.precisions.filter((p) => {
    if (existsSync(join(dir, FILES[p]))) return true;
    if (opts.explicitPrecision) fail(`${join(dir, FILES[p])}: no such file`);
    return false; // with the default "both", use what the folder has
  });
  if (!precisions.length) fail(`${dir} holds neither ${FILES.fp32} nor ${FILES.int8}`);
  const data = opts.idx ? loadIdx(opts) : loadImages(opts.images);
  const failed = data.source.failed ?? [];
  for (const f of failed) process.stderr.write(`classify.mjs: error: ${f.error}\n`);
  const summary = `classify.mjs: ${failed.length} of ${failed.length + data.count} images failed\n`;
  if (!opts.idx && data.count === 0) { // nothing to classify: no model is loaded
    process.stderr.write(summary);
    process.exit(1);
  }
  const result = {
    runtime: { onnxruntime_node: ort.env.versions?.common ?? null, node: process.version },
    model_dir: dir,
    input: data.source,
    truth: data.truth,
    models: {},
  };
  if (opts.emitInputs) {
    result.inputs_base64 = Array.from({ length: data.count },
      (_, i) => Buffer.from(data.pixels.subarray(i * 784, (i + 1) * 784)).toString("base64"));
  }
  const bundle = loadBundle(dir);
  for (const precision of precisions) {
    const model = await loadModel(dir, precision, opts.threads);
    const selfTestResult = bundle ? await selfTest(model, bundle) : null; // before anything is classified
    result.models[precision] = await classify(model, data, opts);
    result.models[precision].self_test = selfTestResult;
    await model.session.release();
  }
  report(opts, data, result);
  if (failed.length) {
    process.stderr.write(summary);
    process.exitCode = 1;
  }
}

main().catch((e) => fail(e?.stack ?? String(e)));
