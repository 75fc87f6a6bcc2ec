// images.mjs: image files for classify.mjs, read as `mnist-edge predict` reads them where Node can.
//
// A folder stands for its image files (by suffix, sorted, not recursive, no hidden files), as in Python.
// PNG (pngjs) and JPEG (jpeg-js, with the EXIF orientation a phone records applied) are decoded to grey
// levels; BMP, GIF, TIFF, WebP and PNM, which Python's predict also reads, are recognised by their first
// bytes and skipped with a message naming the format: Node has no decoder for them without native code.
// Limits as in Python: a regular file of at most 64 MiB, at most 40 megapixels.

import { closeSync, fstatSync, openSync, readdirSync, readSync, statSync } from "node:fs";
import { extname, join } from "node:path";

import jpeg from "jpeg-js";
import { PNG } from "pngjs";

import { rgbaToGray } from "../web/digit.mjs";

// What a folder expands to: mnist_edge/runtime/predict.py's IMAGE_SUFFIXES.
export const IMAGE_SUFFIXES = [".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm",
  ".pnm", ".pbm"];
export const READS = "PNG and JPEG";
const MAX_BYTES = 64 * 1024 * 1024;
const MAX_PIXELS = 40_000_000;

/** One line naming the file, for an image this program cannot use; the others are still classified. */
export class ImageError extends Error {}

/**
 * Files and folders -> [{path, error}] in the order given; a folder becomes its image files (name order).
 * @param {string[]} items
 */
export function expandPaths(items) {
  const out = [];
  for (const item of items) {
    let isDir = false;
    try {
      isDir = statSync(item).isDirectory();
    } catch {
      // not there: reading it names the problem
    }
    if (!isDir) {
      out.push({ path: item, error: null });
      continue;
    }
    let names;
    try {
      names = readdirSync(item, { withFileTypes: true })
        .filter((e) => e.isFile() && !e.name.startsWith(".") && IMAGE_SUFFIXES.includes(extname(e.name).toLowerCase()))
        .map((e) => e.name)
        .sort();
    } catch (e) {
      out.push({ path: item, error: `folder ${item}: cannot list it (${e.code ?? e.message})` });
      continue;
    }
    if (!names.length) out.push({ path: item, error: `folder ${item} holds no image files (.png, .jpg, .jpeg, .bmp, ...)` });
    for (const name of names) out.push({ path: join(item, name), error: null });
  }
  return out;
}

// Formats recognised by their first bytes: those decoded here, and those `mnist-edge predict` reads.
function sniff(b) {
  const starts = (...sig) => sig.every((v, i) => b[i] === v);
  if (starts(0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a)) return "PNG";
  if (starts(0xff, 0xd8, 0xff)) return "JPEG";
  if (starts(0x47, 0x49, 0x46, 0x38)) return "GIF";
  if (starts(0x42, 0x4d)) return "BMP";
  if (starts(0x49, 0x49, 0x2a, 0x00) || starts(0x4d, 0x4d, 0x00, 0x2a)) return "TIFF";
  if (starts(0x52, 0x49, 0x46, 0x46) && String.fromCharCode(...b.subarray(8, 12)) === "WEBP") return "WebP";
  if (b[0] === 0x50 && b[1] >= 0x31 && b[1] <= 0x36 && (b[2] === 0x0a || b[2] === 0x20 || b[2] === 0x0d || b[2] === 0x09)) {
    return "PNM";
  }
  return null;
}

// A regular file of at most MAX_BYTES, read once (a FIFO or device is refused, never read).
function readBounded(path) {
  let fd;
  try {
    fd = openSync(path, "r");
    const st = fstatSync(fd);
    if (!st.isFile()) throw new ImageError(`${path} is not a regular file`);
    if (st.size > MAX_BYTES) throw new ImageError(`${path} is ${st.size} bytes, over the limit of ${MAX_BYTES}`);
    const data = Buffer.alloc(st.size);
    let got = 0;
    while (got < st.size) {
      const n = readSync(fd, data, got, st.size - got, got);
      if (n === 0) break;
      got += n;
    }
    return data.subarray(0, got);
  } catch (e) {
    if (e instanceof ImageError) throw e;
    throw new ImageError(`${path}: ${e.code === "ENOENT" ? "no such file" : e.code === "EISDIR" ? "a folder" : e.message}`);
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

function checkPixels(path, width, height) {
  if (!(width > 0 && height > 0)) throw new ImageError(`${path} has no pixels (${width}x${height})`);
  if (width * height > MAX_PIXELS) {
    throw new ImageError(`${path} is ${width}x${height} = ${width * height} pixels, over the limit of ${MAX_PIXELS}`);
  }
}

function decodePng(path, data) {
  checkPixels(path, data.readUInt32BE(16), data.readUInt32BE(20)); // IHDR, before decoding
  return PNG.sync.read(data); // any bit depth / colour type -> 8-bit RGBA
}

function decodeJpeg(path, data) {
  const img = jpeg.decode(data, { useTArray: true, formatAsRGBA: true, maxResolutionInMP: MAX_PIXELS / 1e6 });
  checkPixels(path, img.width, img.height);
  return img;
}

// The EXIF orientation tag (0x0112) of a JPEG's APP1 segment: 1 (as stored) to 8; 1 when absent.
export function jpegOrientation(b) {
  let pos = 2;
  while (pos + 4 <= b.length && b[pos] === 0xff) {
    const marker = b[pos + 1];
    const length = b.readUInt16BE(pos + 2);
    if (marker === 0xda) break; // start of scan: no metadata after it
    if (marker === 0xe1 && b.toString("latin1", pos + 4, pos + 10) === "Exif\0\0") {
      const tiff = pos + 10;
      if (tiff + 8 > b.length) return 1;
      const le = b.toString("latin1", tiff, tiff + 2) === "II";
      const u16 = (o) => (le ? b.readUInt16LE(o) : b.readUInt16BE(o));
      const u32 = (o) => (le ? b.readUInt32LE(o) : b.readUInt32BE(o));
      const ifd = tiff + u32(tiff + 4);
      if (ifd + 2 > b.length) return 1;
      for (let i = 0, n = u16(ifd); i < n && ifd + 2 + 12 * i + 12 <= b.length; i++) {
        const entry = ifd + 2 + 12 * i;
        if (u16(entry) === 0x0112) {
          const v = u16(entry + 8);
          return v >= 1 && v <= 8 ? v : 1;
        }
      }
      return 1;
    }
    pos += 2 + length;
  }
  return 1;
}

// Grey levels turned upright as Pillow's ImageOps.exif_transpose does for orientation o (2-8).
export function orient(gray, width, height, o) {
  if (o === 1) return { gray, width, height };
  const swap = o >= 5;
  const W = swap ? height : width, H = swap ? width : height;
  // output (x, y) reads the source at (sx, sy)
  const source = {
    2: (x, y) => [width - 1 - x, y], 3: (x, y) => [width - 1 - x, height - 1 - y], 4: (x, y) => [x, height - 1 - y],
    5: (x, y) => [y, x], 6: (x, y) => [y, height - 1 - x], 7: (x, y) => [width - 1 - y, height - 1 - x],
    8: (x, y) => [width - 1 - y, x],
  }[o];
  const out = new Float64Array(W * H);
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const [sx, sy] = source(x, y);
      out[y * W + x] = gray[sy * width + sx];
    }
  }
  return { gray: out, width: W, height: H };
}

/**
 * An image file -> {gray, width, height}: grey levels in [0, 255], upright; ImageError naming the file.
 * @param {string} path
 */
export function readGray(path) {
  const data = readBounded(path);
  if (!data.length) throw new ImageError(`${path} is empty (0 bytes)`);
  const format = sniff(data);
  if (format !== "PNG" && format !== "JPEG") {
    throw new ImageError(format
      ? `${path}: skipped, a ${format} file: this example reads ${READS} (mnist-edge predict reads ${format})`
      : `${path}: not an image this example reads (${READS})`);
  }
  let img;
  try {
    img = format === "PNG" ? decodePng(path, data) : decodeJpeg(path, data);
  } catch (e) {
    if (e instanceof ImageError) throw e;
    throw new ImageError(`${path}: a ${format} file that cannot be decoded (${e.message})`);
  }
  const gray = rgbaToGray(img.data, img.width, img.height);
  return orient(gray, img.width, img.height, format === "JPEG" ? jpegOrientation(data) : 1);
}
