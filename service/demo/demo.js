// The anymodal demo page: one input per modality of the chosen model, built from its contract
// (GET /v1/models/{m}), and the answer of POST /v1/models/{m}/predict drawn as one bar per modality.
// No dependencies, no build step.
"use strict";

const API = new URL("../v1/", location.href); // the page is served at <root>/demo/
const MAX_RECORD_SECONDS = 5;
const $ = (id) => document.getElementById(id);
let inputs = {}; // modality name -> {checkbox, read: async () => JSON value}

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

async function api(path, body) {
  const headers = {};
  const key = $("api-key").value.trim();
  if (key) headers.Authorization = `Bearer ${key}`;
  const init = { headers };
  if (body !== undefined) {
    init.method = "POST";
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(new URL(path, API), init);
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(`${response.status}: ${answer.error || response.statusText}`);
  return answer;
}

const base64 = (bytes) => {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
};
const fileValue = async (file) => ({ b64: base64(new Uint8Array(await file.arrayBuffer())) });

// --- models -------------------------------------------------------------------------------

async function loadModels() {
  const status = $("model-status");
  const select = $("model");
  status.textContent = "Loading models...";
  try {
    const list = await api("models");
    select.replaceChildren(...list.models.map((m) => el("option", { value: m.name, text: m.name })));
    if (list.default_model) select.value = list.default_model;
    if (!list.models.length) throw new Error("the server serves no models");
    await loadModel(select.value);
  } catch (error) {
    status.textContent = `Could not load the models (${error.message}).`;
  }
}

async function loadModel(name) {
  const info = await api(`models/${encodeURIComponent(name)}`);
  inputs = {};
  const fieldsets = Object.entries(info.modalities).map(([modality, spec]) => {
    const build = BUILDERS[spec.kind] || BUILDERS.text;
    return modalityFieldset(modality, spec, build);
  });
  $("modalities").replaceChildren(...fieldsets);
  $("model-status").textContent =
    `${info.name} version ${info.version}: labels ${info.labels.join(", ")}.`;
}

function modalityFieldset(name, spec, build) {
  const checkbox = el("input", { type: "checkbox", id: `use-${name}`, name: `use-${name}` });
  const fieldset = el("fieldset", { id: `modality-${name}`, class: "off" },
    el("legend", {}, checkbox, el("label", { for: `use-${name}`, text: `${name} (${spec.kind})` })));
  const include = () => { checkbox.checked = true; fieldset.className = ""; };
  checkbox.addEventListener("change", () => { fieldset.className = checkbox.checked ? "" : "off"; });
  const { nodes, read } = build(name, spec.input || {}, include);
  fieldset.append(...nodes);
  inputs[name] = { checkbox, read };
  return fieldset;
}

// --- one builder per kind: {nodes, read}; `include` ticks the modality's checkbox -----------

const BUILDERS = { image: imageInput, audio: audioInput, text: textInput, tensor: tensorInput };

function imageInput(name, contract, include) {
  const canvas = el("canvas", { id: `${name}-canvas`, width: 224, height: 224,
    role: "img", "aria-label": `${name}: draw here` });
  const clear = el("button", { type: "button", id: `${name}-clear`, text: "Clear" });
  const file = el("input", { type: "file", id: `${name}-file`, accept: "image/*" });
  const context = canvas.getContext("2d");
  let drawn = false;
  const blank = () => {
    context.fillStyle = "#fff"; // white paper, dark ink: like the scans the model learned from
    context.fillRect(0, 0, canvas.width, canvas.height);
    drawn = false;
  };
  blank();
  Object.assign(context, { strokeStyle: "#111", lineWidth: 40, lineCap: "round", lineJoin: "round" });
  const point = (event) => {
    const box = canvas.getBoundingClientRect();
    return [(event.clientX - box.left) * canvas.width / box.width,
      (event.clientY - box.top) * canvas.height / box.height];
  };
  let drawing = false;
  canvas.addEventListener("pointerdown", (event) => {
    drawing = true;
    canvas.setPointerCapture(event.pointerId);
    context.beginPath();
    context.moveTo(...point(event));
    context.lineTo(...point(event));
    context.stroke();
    drawn = true;
    include();
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    context.lineTo(...point(event));
    context.stroke();
  });
  for (const type of ["pointerup", "pointercancel"]) {
    canvas.addEventListener(type, () => { drawing = false; });
  }
  clear.addEventListener("click", () => { blank(); file.value = ""; });
  file.addEventListener("change", include);
  const size = contract.width ? ` (the model sees ${contract.width}x${contract.height})` : "";
  return {
    nodes: [
      el("div", { class: "row" }, canvas),
      el("div", { class: "row" }, clear,
        el("label", { for: `${name}-file`, text: "or upload an image" }), file),
      el("p", { class: "hint", text: `Draw with the mouse or a finger${size}.` }),
    ],
    read: async () => {
      if (file.files.length) return fileValue(file.files[0]);
      if (!drawn) throw new Error(`${name}: draw something or choose a file`);
      return { b64: fitted(canvas).toDataURL("image/png").split(",")[1] };
    },
  };
}

// The drawing as the model's scans look: cropped to its ink and scaled to fill the frame, slightly
// blurred, the ink faded to grey.
function fitted(canvas) {
  const { width, height } = canvas;
  const pixels = canvas.getContext("2d").getImageData(0, 0, width, height).data;
  let [left, top, right, bottom] = [width, height, -1, -1];
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (pixels[(y * width + x) * 4] < 128) {
        left = Math.min(left, x); right = Math.max(right, x);
        top = Math.min(top, y); bottom = Math.max(bottom, y);
      }
    }
  }
  const side = Math.max(right - left, bottom - top) + 1;
  const out = el("canvas", { width: 64, height: 64 });
  const context = out.getContext("2d");
  context.fillStyle = "#fff";
  context.fillRect(0, 0, 64, 64);
  const margin = 2;
  const scale = (64 - 2 * margin) / side;
  const [w, h] = [(right - left + 1) * scale, (bottom - top + 1) * scale];
  context.filter = "blur(2px)";
  context.drawImage(canvas, left, top, right - left + 1, bottom - top + 1, (64 - w) / 2, (64 - h) / 2, w, h);
  context.filter = "none";
  context.fillStyle = "rgba(255, 255, 255, 0.3)";
  context.fillRect(0, 0, 64, 64);
  return out;
}

function audioInput(name, contract, include) {
  const record = el("button", { type: "button", id: `${name}-record`, text: "Record" });
  const stop = el("button", { type: "button", id: `${name}-stop`, text: "Stop", disabled: "" });
  const file = el("input", { type: "file", id: `${name}-file`, accept: "audio/*,.wav,.flac,.ogg" });
  const status = el("span", { id: `${name}-status`, role: "status", class: "hint", text: "nothing recorded" });
  const player = el("audio", { id: `${name}-player`, controls: "", "aria-label": `${name}: the recording` });
  let wav = null;
  let finish = null;

  record.addEventListener("click", async () => {
    try {
      finish = await startRecording((blob, seconds) => {
        wav = blob;
        player.src = URL.createObjectURL(blob);
        status.textContent = `recorded ${seconds.toFixed(1)} s`;
        record.disabled = false;
        stop.disabled = true;
        include();
      });
      file.value = "";
      record.disabled = true;
      stop.disabled = false;
      status.textContent = `recording (at most ${MAX_RECORD_SECONDS} s)...`;
    } catch (error) {
      status.textContent = `no microphone: ${error.message}`;
    }
  });
  stop.addEventListener("click", () => finish && finish());
  file.addEventListener("change", include);
  const limit = contract.max_seconds ? ` The model hears ${contract.max_seconds} s at most.` : "";
  return {
    nodes: [
      el("div", { class: "row" }, record, stop, status),
      el("div", { class: "row" }, player),
      el("div", { class: "row" }, el("label", { for: `${name}-file`, text: "or upload a recording" }), file),
      el("p", { class: "hint", text: `Say a digit.${limit}` }),
    ],
    read: async () => {
      if (file.files.length) return fileValue(file.files[0]);
      if (!wav) throw new Error(`${name}: record something or choose a file`);
      return fileValue(wav);
    },
  };
}

// Captures the microphone until the returned function is called (or MAX_RECORD_SECONDS pass),
// then hands `done` a 16-bit PCM mono WAV and its length in seconds.
async function startRecording(done) {
  // the raw signal: the browser's speech processing for calls is not what the model learned from
  const raw = { echoCancellation: false, noiseSuppression: false, autoGainControl: false };
  const stream = await navigator.mediaDevices.getUserMedia({ audio: raw });
  const context = new AudioContext();
  const source = context.createMediaStreamSource(stream);
  const processor = context.createScriptProcessor(4096, 1, 1);
  const chunks = [];
  processor.onaudioprocess = (event) => chunks.push(new Float32Array(event.inputBuffer.getChannelData(0)));
  source.connect(processor);
  processor.connect(context.destination); // silent: the output buffer stays zeros
  let stopped = false;
  const finish = () => {
    if (stopped) return;
    stopped = true;
    clearTimeout(timer);
    processor.disconnect();
    source.disconnect();
    stream.getTracks().forEach((track) => track.stop());
    const samples = concat(chunks);
    const rate = context.sampleRate;
    context.close();
    done(wavFile(samples, rate), samples.length / rate);
  };
  const timer = setTimeout(finish, MAX_RECORD_SECONDS * 1000);
  return finish;
}

function concat(chunks) {
  const out = new Float32Array(chunks.reduce((n, c) => n + c.length, 0));
  let offset = 0;
  for (const chunk of chunks) { out.set(chunk, offset); offset += chunk.length; }
  return out;
}

function wavFile(samples, rate) {
  const view = new DataView(new ArrayBuffer(44 + samples.length * 2));
  const text = (offset, s) => [...s].forEach((c, i) => view.setUint8(offset + i, c.charCodeAt(0)));
  text(0, "RIFF"); view.setUint32(4, 36 + samples.length * 2, true); text(8, "WAVE");
  text(12, "fmt "); view.setUint32(16, 16, true); view.setUint16(20, 1, true); // PCM
  view.setUint16(22, 1, true); view.setUint32(24, rate, true); view.setUint32(28, rate * 2, true);
  view.setUint16(32, 2, true); view.setUint16(34, 16, true);
  text(36, "data"); view.setUint32(40, samples.length * 2, true);
  samples.forEach((x, i) => view.setInt16(44 + i * 2, Math.max(-1, Math.min(1, x)) * 0x7fff, true));
  return new Blob([view], { type: "audio/wav" });
}

function textInput(name, contract, include) {
  const field = el("input", { type: "text", id: `${name}-text`, class: "wide",
    placeholder: "a digit's name in any language, e.g. sieben" });
  if (contract.max_length) field.maxLength = contract.max_length * 4; // the server counts bytes
  field.addEventListener("input", include);
  return {
    nodes: [el("label", { for: `${name}-text`, text: `${name} text` }), field],
    read: async () => field.value,
  };
}

function tensorInput(name, contract, include) {
  const field = el("input", { type: "text", id: `${name}-tensor`, class: "wide", inputmode: "decimal",
    placeholder: "numbers, comma-separated" });
  field.addEventListener("input", include);
  const length = contract.length ? `${contract.length} ` : "";
  return {
    nodes: [el("label", { for: `${name}-tensor`, text: `${name}: ${length}numbers, comma-separated` }), field],
    read: async () => {
      const values = field.value.split(",").map((s) => s.trim()).filter(Boolean).map(Number);
      if (values.some(Number.isNaN)) throw new Error(`${name}: only numbers, separated by commas`);
      return values;
    },
  };
}

// --- predict and show the answer ---------------------------------------------------------------

async function predict(event) {
  event.preventDefault();
  const submit = $("submit");
  submit.disabled = true;
  try {
    const chosen = Object.entries(inputs).filter(([, input]) => input.checkbox.checked);
    if (!chosen.length) throw new Error("tick at least one modality to send");
    const values = {};
    for (const [name, input] of chosen) values[name] = await input.read();
    const model = encodeURIComponent($("model").value);
    showAnswer(await api(`models/${model}/predict`, { inputs: values, options: { top_k: 3 } }));
  } catch (error) {
    showError(error.message);
  } finally {
    submit.disabled = false;
  }
}

function showError(message) {
  $("answer").hidden = false;
  $("result").hidden = true;
  $("error").hidden = false;
  $("error").textContent = message;
}

function showAnswer(answer) {
  $("answer").hidden = false;
  $("error").hidden = true;
  $("result").hidden = false;
  $("label").textContent = answer.label;
  $("score").textContent = answer.score.toFixed(3);
  $("unreliable-warning").hidden = answer.reliable !== false;
  $("bars").replaceChildren(...Object.entries(answer.modalities).map(([name, m]) => bar(name, m)));
}

function bar(name, m) {
  const weight = m.weight || 0;
  const parts = [m.state, `weight ${weight.toFixed(2)}`];
  if (m.label !== undefined) parts.push(`says ${m.label} with confidence ${m.confidence.toFixed(2)}`);
  if (m.state === "unreliable" && m.reliability) {
    parts.push(`p-value ${m.reliability.p_value.toPrecision(2)} < ${m.reliability.threshold}`);
  }
  if (m.reason) parts.push(m.reason);
  const fill = el("div", { class: "fill" });
  fill.style.width = `${(weight * 100).toFixed(1)}%`;
  return el("li", { id: `bar-${name}`, class: `bar ${m.state}`, "data-state": m.state },
    el("span", { class: "name", text: name }),
    el("div", { class: "track", role: "meter", "aria-label": `${name} fusion weight`,
      "aria-valuemin": "0", "aria-valuemax": "1", "aria-valuenow": weight.toFixed(3) }, fill),
    el("span", { class: "detail", id: `bar-${name}-detail`, text: parts.join(" · ") }));
}

$("predict-form").addEventListener("submit", predict);
$("load-models").addEventListener("click", loadModels);
$("model").addEventListener("change", () => loadModel($("model").value).catch((e) => showError(e.message)));
loadModels();
