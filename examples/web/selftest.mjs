// selftest.mjs: read an artifact folder's self-test bundle (selftest.bin) and check a session against it.
// Shared by the Node example and the browser demo; the same check as `mnist-edge verify --self-test`
// (mnist_edge/selftest.py). Format mnist-edge-selftest/1, little-endian (docs/self-test.md):
//   bytes 0-7 "MNSTEST1", bytes 8-11 uint32 H, H bytes of JSON header, zero padding to a multiple of 64;
//   then the arrays, each at header.arrays[NAME].offset bytes from there: "images" uint8 [N,1,28,28],
//   "labels" uint8 [N], "logits/FILE" float32 [N, classes] per model file.

const MAGIC = "MNSTEST1";
const FORMAT = "mnist-edge-selftest/1";

export function parseBundle(bytes) {
  const u8 = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  const magic = String.fromCharCode(...u8.subarray(0, 8));
  if (u8.length < 12 || magic !== MAGIC) throw new Error(`not an mnist-edge self-test bundle (magic ${JSON.stringify(magic)})`);
  const view = new DataView(u8.buffer, u8.byteOffset, u8.byteLength);
  const hlen = view.getUint32(8, true);
  if (12 + hlen > u8.length) throw new Error("self-test bundle: header runs past the end of the file");
  const header = JSON.parse(new TextDecoder().decode(u8.subarray(12, 12 + hlen)));
  if (header.format !== FORMAT) throw new Error(`self-test bundle format ${header.format}, expected ${FORMAT}`);
  const start = Math.ceil((12 + hlen) / 64) * 64;
  const arrays = {};
  for (const [name, spec] of Object.entries(header.arrays)) {
    const begin = start + spec.offset;
    if (begin + spec.nbytes > u8.length) throw new Error(`self-test bundle: array ${name} does not fit the file`);
    // a copy (new buffer, offset 0: aligned for Float32Array); Node's Buffer.slice would be a view of its pool
    const raw = new Uint8Array(u8.subarray(begin, begin + spec.nbytes));
    if (spec.dtype === "uint8") arrays[name] = raw;
    else if (spec.dtype === "float32") arrays[name] = new Float32Array(raw.buffer, 0, spec.nbytes / 4);
    else throw new Error(`self-test bundle: array ${name} has dtype ${spec.dtype}`);
  }
  return { header, arrays };
}

// Run `session` (an onnxruntime InferenceSession, Node or web) on the bundle's images in each run the bundle
// names for `file` (the first `images` images, `batch_size` at a time), and compare with the reference logits. Returns
// { file, passed, exact, max_abs_diff, label_changes, moved_images, tolerance, problem }.
export async function runSelfTest(ort, session, bundle, file) {
  const spec = bundle.header.files[file];
  if (!spec) throw new Error(`the self-test bundle has no reference for ${file}`);
  const images = bundle.arrays.images;
  const reference = bundle.arrays[spec.array];
  const tol = spec.tolerance;
  let maxDiff = 0, labelChanges = 0, moved = 0;
  const problems = [];
  for (const { batch_size: batch, images: n } of spec.runs) {
    let batchMax = 0, batchLabels = 0, batchMoved = 0;
    for (let start = 0; start < n; start += batch) {
      const m = Math.min(batch, n - start);
      const image = new ort.Tensor("uint8", images.subarray(start * 784, (start + m) * 784), [m, 1, 28, 28]);
      const z = (await session.run({ image })).logits.data;
      const k = z.length / m; // classes: the logits' second dimension (10 digits, or a model's own)
      for (let i = 0; i < m; i++) {
        let rowMax = 0, got = 0, want = 0;
        for (let c = 0; c < k; c++) {
          const a = z[i * k + c], b = reference[(start + i) * k + c];
          if (!Number.isFinite(a)) rowMax = Infinity;
          rowMax = Math.max(rowMax, Math.abs(a - b));
          if (a > z[i * k + got]) got = c;
          if (b > reference[(start + i) * k + want]) want = c;
        }
        batchMax = Math.max(batchMax, rowMax);
        if (got !== want) batchLabels++;
        if (rowMax > (tol.step ?? 0) / 2) batchMoved++;
      }
    }
    const bad = [];
    if (!(batchMax <= tol.max_abs_diff)) bad.push(`max |Δ logits| ${batchMax.toPrecision(3)} vs tolerance ${tol.max_abs_diff}`);
    if (batchLabels > tol.label_changes) bad.push(`${batchLabels} label(s) changed`);
    if (tol.moved_images !== undefined && batchMoved > tol.moved_images) {
      bad.push(`${batchMoved} of ${n} images moved by a quantization step, at most ${tol.moved_images} may`);
    }
    if (bad.length) problems.push(`batch ${batch}: ${bad.join(", ")}`);
    maxDiff = Math.max(maxDiff, batchMax);
    labelChanges = Math.max(labelChanges, batchLabels);
    moved = Math.max(moved, batchMoved);
  }
  return {
    file, passed: problems.length === 0, exact: maxDiff === 0, max_abs_diff: maxDiff, label_changes: labelChanges,
    moved_images: moved, tolerance: tol, problem: problems.join("; ") || null,
  };
}
