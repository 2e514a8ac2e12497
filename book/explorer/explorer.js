// The course website's masking explorer: the course's mini MAE, exported to ONNX by
// `python -m mae_course export-onnx`, run in this page by onnxruntime-web (WebAssembly, one thread).
//
// It follows the Python explorer's conventions (mae_course/seeing/explorer.py, reconstruction.py): the graph takes images, masking noise and the number of kept patches
// int(L * (1 - ratio)); the patches of smallest noise are kept, ties broken by the lower index (a
// stable sort, as torch.argsort(stable=True) and ONNX's TopK do); removed patches are drawn in the
// dataset's mean colour; a norm-pix model's predictions get the true patch's mean and
// sqrt(unbiased var + 1e-6) back; the error map greys out visible patches, on a fixed scale per image.
// scripts/build_explorer.py writes explorer.json (the model's settings, the samples, the colour map)
// and copies this file beside onnxruntime-web's. tests/test_explorer_page.py drives it in Chromium.

import * as ort from "./ort.wasm.bundle.min.mjs";

// ------------------------------------------------------------------ masking, as in mae_course/model/masking.py

/** int(L * (1 - ratio)), with Python's checks (mae_course.model.masking.num_kept). */
export function numKept(length, ratio) {
  if (!(ratio >= 0 && ratio < 1)) throw new Error(`mask_ratio must be in [0, 1), got ${ratio}`);
  const kept = Math.trunc(length * (1 - ratio));
  if (kept < 1) throw new Error(`mask_ratio ${ratio} keeps no token out of ${length}`);
  return kept;
}

/** The indices of noise in increasing order, equal values by increasing index (a stable argsort). */
export function stableArgsort(noise) {
  return Array.from(noise.keys()).sort((a, b) => noise[a] - noise[b] || a - b);
}

/** (L) 1 for removed, 0 for kept: the lenKeep patches of smallest noise stay. */
export function maskFromNoise(noise, lenKeep) {
  const mask = new Float32Array(noise.length).fill(1);
  stableArgsort(noise).slice(0, lenKeep).forEach((i) => (mask[i] = 0));
  return mask;
}

/** A small seeded generator of uniform numbers in [0, 1) (mulberry32). */
export function generator(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Uniform noise, as float32 like torch.rand: random sampling. */
export function uniformNoise(length, rand) {
  return Float32Array.from({ length }, () => rand());
}

/** Noise whose smallest values sit on the kept patches: kept in [0, .5), removed in [.5, 1) (_noise_from_keep). */
export function noiseFromKeep(keep, rand) {
  return Float32Array.from(keep, (k) => ((k ? 0 : 1) + rand()) / 2);
}

function roundHalfEven(x) {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r; // Python's round()
}

/** Block-wise masking noise (block_mask_noise): random rectangles removed until L - lenKeep are gone. */
export function blockNoise(rows, cols, ratio, rand, minBlock, aspectRange) {
  const length = rows * cols;
  const numMasked = length - numKept(length, ratio);
  const [logLo, logHi] = [Math.log(aspectRange[0]), Math.log(aspectRange[1])];
  const uniform = (lo, hi) => lo + (hi - lo) * rand();
  const randint = (hi) => Math.floor(rand() * (hi + 1)); // in [0, hi]
  const masked = new Uint8Array(length);
  let count = 0;
  for (let attempt = 0; attempt < 100 * length && count < numMasked; attempt++) {
    const remaining = numMasked - count;
    const area = uniform(Math.min(minBlock, remaining), remaining);
    const aspect = Math.exp(uniform(logLo, logHi));
    const h = Math.max(1, roundHalfEven(Math.sqrt(area * aspect)));
    const w = Math.max(1, roundHalfEven(Math.sqrt(area / aspect)));
    if (h > rows || w > cols) continue;
    const top = randint(rows - h), left = randint(cols - w);
    const cells = [];
    for (let r = top; r < top + h; r++) for (let c = left; c < left + w; c++) cells.push(r * cols + c);
    const fresh = cells.filter((i) => !masked[i]).length;
    if (fresh > 0 && fresh <= remaining) {
      cells.forEach((i) => (masked[i] = 1));
      count += fresh;
    }
  }
  const free = Array.from(masked.keys()).filter((i) => !masked[i]);
  for (let i = free.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [free[i], free[j]] = [free[j], free[i]];
  }
  free.slice(0, numMasked - count).forEach((i) => (masked[i] = 1)); // no block fits the last gaps
  return noiseFromKeep(Array.from(masked, (m) => !m), rand);
}

/** Grid-wise masking noise (grid_mask_noise): one patch of every 2x2 cell kept, at a random phase. */
export function gridNoise(rows, cols, rand) {
  const [pr, pc] = [Math.floor(rand() * 2), Math.floor(rand() * 2)];
  const keep = Array.from({ length: rows * cols }, (_, i) => Math.floor(i / cols) % 2 === pr && (i % cols) % 2 === pc);
  return noiseFromKeep(keep, rand);
}

// ------------------------------------------------------------------ pixels, as in mae_course/seeing/reconstruction.py

/** (H, W, 3) uint8 -> (3, H, W) float32, (x / 255 - mean) / std in float32 steps, as torchvision does. */
export function normalize(rgb, size, mean, std) {
  const f = Math.fround;
  const out = new Float32Array(3 * size * size);
  for (let c = 0; c < 3; c++)
    for (let i = 0; i < size * size; i++) out[c * size * size + i] = f(f(f(rgb[3 * i + c] / 255) - f(mean[c])) / f(std[c]));
  return out;
}

/** (3, H, W) -> (L, p*p*3), patches in row-major grid order, each over (pixel row, pixel column, channel). */
export function patchify(chw, size, p) {
  const g = size / p, out = new Float32Array(chw.length);
  let k = 0;
  for (let h = 0; h < g; h++)
    for (let w = 0; w < g; w++)
      for (let y = 0; y < p; y++)
        for (let x = 0; x < p; x++)
          for (let c = 0; c < 3; c++) out[k++] = chw[c * size * size + (h * p + y) * size + (w * p + x)];
  return out;
}

function patchStats(t, i, d) {
  let mean = 0;
  for (let j = 0; j < d; j++) mean += t[i * d + j];
  mean /= d;
  let sq = 0;
  for (let j = 0; j < d; j++) sq += (t[i * d + j] - mean) ** 2;
  return [mean, sq / (d - 1)]; // the unbiased variance, as torch.var
}

/** norm_pix_target: every patch by its own mean and sqrt(unbiased var + eps). */
export function normPixTarget(target, d, eps) {
  const out = new Float32Array(target.length);
  for (let i = 0; i < target.length / d; i++) {
    const [mean, v] = patchStats(target, i, d);
    for (let j = 0; j < d; j++) out[i * d + j] = (target[i * d + j] - mean) / Math.sqrt(v + eps);
  }
  return out;
}

/** predictions_to_pixels: a norm-pix model's patches get the true patch's mean and sqrt(var + eps) back. */
export function pixelsFromPrediction(pred, target, d, normPix, eps) {
  if (!normPix) return Float32Array.from(pred);
  const out = new Float32Array(pred.length);
  for (let i = 0; i < pred.length / d; i++) {
    const [mean, v] = patchStats(target, i, d);
    for (let j = 0; j < d; j++) out[i * d + j] = pred[i * d + j] * Math.sqrt(v + eps) + mean;
  }
  return out;
}

/** The error of every patch, mean over its values, in the loss's own target space. */
export function patchErrors(pred, target, d, normPix, eps) {
  const t = normPix ? normPixTarget(target, d, eps) : target;
  return Float64Array.from({ length: pred.length / d }, (_, i) => {
    let s = 0;
    for (let j = 0; j < d; j++) s += (pred[i * d + j] - t[i * d + j]) ** 2;
    return s / d;
  });
}

/** The top of the error map's scale (error_scale): the most contrasted patch predicted as flat grey. */
export function errorScale(target, d, normPix, eps) {
  const flat = new Float32Array(target.length);
  return Math.max(Math.max(...patchErrors(flat, target, d, normPix, eps)), 1e-6);
}

/** paste_visible: the prediction where a patch was removed, the original elsewhere. */
export function pasteVisible(pred, target, mask, d) {
  return Float32Array.from(pred, (v, k) => (mask[Math.floor(k / d)] ? v : target[k]));
}

/** (L, p*p*3) normalized patches -> (H, W, 4) RGBA bytes, de-normalized and clamped to [0, 1]. */
export function patchesToRGBA(patches, size, p, mean, std) {
  const g = size / p, out = new Uint8ClampedArray(size * size * 4);
  let k = 0;
  for (let h = 0; h < g; h++)
    for (let w = 0; w < g; w++)
      for (let y = 0; y < p; y++)
        for (let x = 0; x < p; x++) {
          const o = 4 * ((h * p + y) * size + (w * p + x));
          for (let c = 0; c < 3; c++) out[o + c] = Math.round(Math.min(1, Math.max(0, patches[k++] * std[c] + mean[c])) * 255);
          out[o + 3] = 255;
        }
  return out;
}

// ------------------------------------------------------------------ the page

const root = document.getElementById("mae-explorer");
const $ = (id) => root.querySelector(`#mx-${id}`);
const words = JSON.parse(root.dataset.words);
const say = (key, values = {}) => words[key].replace(/\{(\w+)\}/g, (_, k) => values[k]);
const status = (text, isError = false) => {
  $("status").textContent = text;
  $("status").classList.toggle("mx-error", isError);
};

function decode(base64) {
  return Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
}

const state = {
  meta: null, session: null, image: null, imageName: "", sampling: "random", ratio: 0.75, seed: 1,
  manualKeep: null, fixedNoise: null, last: null, lastRedrawMs: null, redraws: 0,
};

function currentNoise() {
  const { meta, sampling, ratio } = state;
  const [rows, cols] = meta.grid;
  const rand = generator(state.seed);
  if (state.fixedNoise) return { noise: state.fixedNoise.noise, lenKeep: state.fixedNoise.lenKeep };
  if (state.manualKeep) {
    const lenKeep = state.manualKeep.filter(Boolean).length;
    return { noise: noiseFromKeep(state.manualKeep, rand), lenKeep };
  }
  const lenKeep = numKept(rows * cols, ratio);
  if (sampling === "block") return { noise: blockNoise(rows, cols, ratio, rand, meta.block.min_block, meta.block.aspect_range), lenKeep };
  if (sampling === "grid") return { noise: gridNoise(rows, cols, rand), lenKeep };
  return { noise: uniformNoise(rows * cols, rand), lenKeep };
}

async function infer(normalized, noise, lenKeep) {
  const { meta, session } = state;
  const side = meta.img_size;
  const feeds = {
    images: new ort.Tensor("float32", normalized, [1, 3, side, side]),
    noise: new ort.Tensor("float32", noise, [1, noise.length]),
    len_keep: new ort.Tensor("int64", BigInt64Array.of(BigInt(lenKeep)), []),
  };
  const out = await session.run(feeds);
  return { pred: out.pred.data, mask: out.mask.data };
}

function draw(id, rgba, side) {
  const canvas = $(id);
  canvas.getContext("2d").putImageData(new ImageData(rgba, side, side), 0, 0);
}

async function redraw() {
  const { meta } = state;
  const { img_size: side, patch_size: p, mean, std, eps, norm_pix_loss: normPix } = meta;
  const d = p * p * 3, L = meta.grid[0] * meta.grid[1];
  const normalized = normalize(state.image, side, mean, std);
  const target = patchify(normalized, side, p);
  const { noise, lenKeep } = currentNoise();
  const jsMask = maskFromNoise(noise, lenKeep);
  const { pred, mask } = await infer(normalized, noise, lenKeep);
  if (!mask.every((m, i) => m === jsMask[i])) console.error("the model's mask differs from the page's own argsort");
  const pixels = pixelsFromPrediction(pred, target, d, normPix, eps);
  const zeros = new Float32Array(target.length); // 0 in normalized space: the dataset's mean colour
  const errors = patchErrors(pred, target, d, normPix, eps);
  const scale = errorScale(target, d, normPix, eps);
  const panels = {
    original: patchesToRGBA(target, side, p, mean, std),
    masked: patchesToRGBA(pasteVisible(zeros, target, mask, d), side, p, mean, std),
    reconstruction: patchesToRGBA(pixels, side, p, mean, std),
    pasted: patchesToRGBA(pasteVisible(pixels, target, mask, d), side, p, mean, std),
  };
  for (const [id, rgba] of Object.entries(panels)) draw(id, rgba, side);
  const heat = new Uint8ClampedArray(L * 4).fill(255);
  const level = (e) => Math.min(255, Math.floor(Math.min(1, Math.max(0, e / scale)) * 256)); // matplotlib's lookup
  const grey = Math.round(meta.grey * 255);
  let sum = 0, removed = 0;
  errors.forEach((e, i) => {
    heat.set(mask[i] ? meta.magmaBytes.subarray(3 * level(e), 3 * level(e) + 3) : [grey, grey, grey], 4 * i);
    if (mask[i]) (sum += e), removed++;
  });
  draw("error", heat, meta.grid[0]);
  $("scale-top").textContent = scale.toFixed(3);
  $("kept").textContent = say("kept", { kept: L - removed, total: L });
  $("summary").textContent = removed ? say("summary", { n: removed, error: (sum / removed).toFixed(3), image: state.imageName }) : say("nothingRemoved");
  state.last = { pred, mask, jsMask, noise, lenKeep, errors, scale, pixels, panels, heat };
  state.redraws++;
}

// One redraw at a time; a control moved meanwhile is drawn next, with the latest settings.
let running = null, again = false, requested = null;
function request() {
  requested ??= performance.now();
  if (running) return void (again = true);
  running = (async () => {
    do {
      again = false;
      const start = requested;
      requested = null;
      try {
        await redraw();
        state.lastRedrawMs = performance.now() - start;
      } catch (e) {
        console.error(e);
        status(say("failed", { error: e.message }), true);
      }
    } while (again);
    running = null;
  })();
}
const idle = async () => { while (running) await running; };

function showRatio() {
  $("ratio-value").textContent = `${Math.round(state.ratio * 100)}%`;
  $("ratio").value = String(state.ratio);
}

function choose(image, name) {
  state.image = image;
  state.imageName = name;
  request();
}

function toggle(event) {
  if (!state.last) return;
  const canvas = event.currentTarget, rect = canvas.getBoundingClientRect();
  const [rows, cols] = state.meta.grid;
  const col = Math.min(cols - 1, Math.floor(((event.clientX - rect.left) / rect.width) * cols));
  const row = Math.min(rows - 1, Math.floor(((event.clientY - rect.top) / rect.height) * rows));
  const keep = Array.from(state.last.mask, (m) => m === 0);
  const i = row * cols + col;
  keep[i] = !keep[i];
  if (!keep.some(Boolean)) return status(say("lastPatch"));
  state.manualKeep = keep;
  state.fixedNoise = null;
  state.ratio = 1 - keep.filter(Boolean).length / keep.length;
  showRatio();
  request();
}

function sampleButtons(meta) {
  const { img_size: side } = meta;
  const box = $("samples");
  meta.samples.labels.forEach((label, n) => {
    const pixels = meta.samplePixels.subarray(n * side * side * 3, (n + 1) * side * side * 3);
    const button = document.createElement("button");
    button.type = "button";
    button.className = "mx-sample";
    const name = say("sample", { index: meta.samples.indices[n], shape: words.classes[label] });
    button.title = name;
    button.dataset.index = String(n);
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = side;
    const rgba = new Uint8ClampedArray(side * side * 4);
    for (let i = 0; i < side * side; i++) rgba.set([pixels[3 * i], pixels[3 * i + 1], pixels[3 * i + 2], 255], 4 * i);
    canvas.getContext("2d").putImageData(new ImageData(rgba, side, side), 0, 0);
    button.append(canvas);
    button.addEventListener("click", () => {
      box.querySelectorAll(".mx-sample").forEach((b) => b.classList.toggle("mx-chosen", b === button));
      choose(pixels, name);
    });
    box.append(button);
  });
  box.firstChild.classList.add("mx-chosen");
}

function upload(file) {
  const side = state.meta.img_size;
  const url = URL.createObjectURL(file);
  const img = new Image();
  img.onload = () => {
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = side;
    const ctx = canvas.getContext("2d");
    ctx.imageSmoothingQuality = "high";
    const s = Math.min(img.naturalWidth, img.naturalHeight); // the center square, as load_image crops
    ctx.drawImage(img, (img.naturalWidth - s) / 2, (img.naturalHeight - s) / 2, s, s, 0, 0, side, side);
    const rgba = ctx.getImageData(0, 0, side, side).data;
    URL.revokeObjectURL(url);
    root.querySelectorAll(".mx-sample").forEach((b) => b.classList.remove("mx-chosen"));
    choose(Uint8Array.from({ length: side * side * 3 }, (_, k) => rgba[4 * Math.floor(k / 3) + (k % 3)]), say("yours", { name: file.name }));
  };
  img.onerror = () => status(say("unreadable", { name: file.name }), true);
  img.src = url;
}

function wire() {
  $("ratio").addEventListener("input", (e) => {
    state.ratio = parseFloat(e.target.value);
    state.manualKeep = state.fixedNoise = null;
    showRatio();
    request();
  });
  $("sampling").addEventListener("change", (e) => {
    state.sampling = e.target.value;
    state.manualKeep = state.fixedNoise = null;
    const grid = state.sampling === "grid";
    if (grid) state.ratio = 0.75; // one patch of every 2x2 cell: always 75%
    $("ratio").disabled = grid;
    $("grid-note").hidden = !grid;
    showRatio();
    request();
  });
  $("new-mask").addEventListener("click", () => {
    state.seed++;
    state.manualKeep = state.fixedNoise = null;
    request();
  });
  $("upload").addEventListener("change", (e) => e.target.files[0] && upload(e.target.files[0]));
  for (const id of ["masked", "reconstruction", "pasted", "error"]) $(id).addEventListener("click", toggle);
}

async function start() {
  if (location.protocol === "file:") return status(say("fileProtocol"), true);
  const assets = new URL(root.dataset.assets, location.href);
  status(say("loading"));
  const t0 = performance.now();
  const meta = await (await fetch(new URL("explorer.json", assets))).json();
  meta.magmaBytes = decode(meta.magma);
  meta.samplePixels = decode(meta.samples.pixels);
  ort.env.wasm.numThreads = 1; // no cross-origin isolation on a static site: one thread, no warning
  ort.env.logLevel = "error";
  const session = await ort.InferenceSession.create(new URL(meta.onnx, assets).href, { executionProviders: ["wasm"] });
  Object.assign(state, { meta, session });
  sampleButtons(meta);
  wire();
  showRatio();
  const side = meta.img_size;
  choose(meta.samplePixels.subarray(0, side * side * 3), say("sample", { index: meta.samples.indices[0], shape: words.classes[meta.samples.labels[0]] }));
  await idle();
  status(say("ready", { ms: Math.round(performance.now() - t0) }));
  root.dataset.ready = "true";
}

// For the tests (tests/test_explorer_page.py) and the curious: the state, and ways to set it exactly.
window.maeExplorer = {
  state, idle, numKept, maskFromNoise, stableArgsort, blockNoise, gridNoise, normalize, patchify,
  pixelsFromPrediction, patchErrors, errorScale,
  /** Draw with this exact noise (an array of L numbers) and kept count; the next control moved drops it. */
  async setNoise(noise, lenKeep) {
    state.fixedNoise = { noise: Float32Array.from(noise), lenKeep };
    state.manualKeep = null;
    request();
    await idle();
    return { pred: Array.from(state.last.pred), mask: Array.from(state.last.mask) };
  },
  async chooseSample(n) {
    root.querySelectorAll(".mx-sample")[n].click();
    await idle();
  },
};
window.maeExplorer.ready = start().catch((e) => {
  console.error(e);
  status(say("failed", { error: e.message }), true);
});
