// charlm's demo page: a character-level RNN / LSTM / GRU run in plain JavaScript, with no library.
// The model (weights, vocabulary, card) is the JSON of the script element "charlm-model", written by
// `charlm export --html`. CharLM below is the model and the sampling (no DOM: node runs it in tests);
// the page's controls come after it. The arithmetic is PyTorch's (gate order i, f, g, o for an LSTM;
// r, z, n for a GRU, with b_hn inside the reset gate), computed in double precision.
"use strict";

const CharLM = (() => {
  const HALF = halfTable();

  function halfTable() {  // every float16 bit pattern -> its value (exact in a float32)
    const table = new Float32Array(65536);
    for (let bits = 0; bits < 65536; bits++) {
      const sign = bits & 0x8000 ? -1 : 1, exponent = (bits >> 10) & 0x1f, fraction = bits & 0x3ff;
      table[bits] = exponent === 0 ? sign * fraction * 2 ** -24
        : exponent === 31 ? (fraction ? NaN : sign * Infinity)
        : sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
    }
    return table;
  }

  function decodeWeights(base64, precision) {
    const text = atob(base64);
    const bytes = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
    if (precision === "float32") return new Float32Array(bytes.buffer);  // little-endian, as written
    const halves = new Uint16Array(bytes.buffer);
    const values = new Float32Array(halves.length);
    for (let i = 0; i < halves.length; i++) values[i] = HALF[halves[i]];
    return values;
  }

  const GATES = { rnn_tanh: 1, rnn_relu: 1, lstm: 4, gru: 3 };

  function load(spec) {
    const values = decodeWeights(spec.data, spec.precision);
    const tensor = (name) => {
      const [offset, rows, cols] = spec.tensors[name];
      return { data: values.subarray(offset, offset + rows * cols), rows, cols };
    };
    const hidden = spec.hidden_size, gates = GATES[spec.kind] * hidden;
    const layers = [];
    for (let k = 0; k < spec.num_layers; k++) {
      layers.push({ wih: tensor(`layer${k}.w_ih`), whh: tensor(`layer${k}.w_hh`),
                    bih: tensor(`layer${k}.b_ih`).data, bhh: tensor(`layer${k}.b_hh`).data });
    }
    const embedding = spec.input === "embedding" ? tensor("embedding") : null;
    const eod = spec.eod ?? null;  // the end-of-document symbol's id: a model trained on documents
    const model = {
      spec, kind: spec.kind, hidden, gates, layers, embedding, eod,
      vocab: spec.vocab, index: new Map(spec.vocab.map((c, i) => [c, i])),
      // each id as the text shows it: <eod> as a line break (charlm generate's plain output)
      shown: spec.vocab.map((c, i) => (i === eod ? "\n" : c)),
      reset: spec.reset && eod !== null ? eod : null,  // an id whose reading zeroes the state (as in training)
      head: spec.tied ? embedding : tensor("head.w"), headBias: tensor("head.b").data,
      gi: new Float64Array(gates), gh: new Float64Array(gates), logits: new Float64Array(spec.vocab.length),
      row: new Float64Array(embedding ? embedding.cols : 0),  // the embedding of the current character
    };
    return model;
  }

  function initialState(model) {
    const zeros = () => model.layers.map(() => new Float64Array(model.hidden));
    return { h: zeros(), c: model.kind === "lstm" ? zeros() : null };
  }

  // Before reading `id`: a model trained with train.reset_state_at_documents starts each document at zero.
  function resetAt(model, state, id) {
    if (id !== model.reset) return;
    for (const h of state.h) h.fill(0);
    if (state.c) for (const c of state.c) c.fill(0);
  }

  // The prefix in the run's own text form (data.normalize, data.lowercase), as charlm generate reads it.
  function clean(model, text) {
    const form = model.spec.normalize;
    const normal = form && form !== "none" ? text.normalize(form) : text;
    return model.spec.lowercase ? normal.toLowerCase() : normal;
  }

  // out[j] = bias[j] + sum_k W[j, k] x[k], for a row-major (rows x cols) W. Four running sums: the
  // additions of one row do not wait on each other (about 1.4x faster in V8). x is always a Float64Array,
  // so that the loop stays monomorphic.
  function affine(out, w, bias, x) {
    const cols = w.cols, data = w.data, end = cols - (cols % 4);
    for (let j = 0; j < w.rows; j++) {
      const row = j * cols;
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0, k = 0;
      for (; k < end; k += 4) {
        s0 += data[row + k] * x[k];
        s1 += data[row + k + 1] * x[k + 1];
        s2 += data[row + k + 2] * x[k + 2];
        s3 += data[row + k + 3] * x[k + 3];
      }
      for (; k < cols; k++) s0 += data[row + k] * x[k];
      out[j] = bias[j] + ((s0 + s1) + (s2 + s3));
    }
  }

  const sigmoid = (x) => 1 / (1 + Math.exp(-x));

  // Feed one character id; the state moves on, and the returned logits score the next character.
  function step(model, state, id) {
    const { gi, gh, hidden: H } = model;
    let x = null;
    for (let k = 0; k < model.layers.length; k++) {
      const layer = model.layers[k], h = state.h[k];
      if (k === 0 && !model.embedding) {  // one-hot input: W_ih times it is column `id` of W_ih
        const cols = layer.wih.cols, data = layer.wih.data;
        for (let j = 0; j < model.gates; j++) gi[j] = layer.bih[j] + data[j * cols + id];
      } else {
        if (k === 0) {
          const cols = model.embedding.cols;
          model.row.set(model.embedding.data.subarray(id * cols, (id + 1) * cols));
        }
        affine(gi, layer.wih, layer.bih, k === 0 ? model.row : x);
      }
      affine(gh, layer.whh, layer.bhh, h);
      if (model.kind === "lstm") {
        const c = state.c[k];
        for (let j = 0; j < H; j++) {
          const i = sigmoid(gi[j] + gh[j]), f = sigmoid(gi[H + j] + gh[H + j]);
          const g = Math.tanh(gi[2 * H + j] + gh[2 * H + j]), o = sigmoid(gi[3 * H + j] + gh[3 * H + j]);
          c[j] = f * c[j] + i * g;
          h[j] = o * Math.tanh(c[j]);
        }
      } else if (model.kind === "gru") {
        for (let j = 0; j < H; j++) {
          const r = sigmoid(gi[j] + gh[j]), z = sigmoid(gi[H + j] + gh[H + j]);
          const n = Math.tanh(gi[2 * H + j] + r * gh[2 * H + j]);
          h[j] = (1 - z) * n + z * h[j];
        }
      } else {
        const relu = model.kind === "rnn_relu";
        for (let j = 0; j < H; j++) {
          const pre = gi[j] + gh[j];
          h[j] = relu ? Math.max(pre, 0) : Math.tanh(pre);
        }
      }
      x = h;
    }
    affine(model.logits, model.head, model.headBias, x);
    return model.logits;
  }

  // The ids of `text`; throws naming the characters the model never saw (as charlm generate does).
  function encode(model, text) {
    const chars = Array.from(text);
    const missing = [...new Set(chars.filter((c) => !model.index.has(c)))];
    if (missing.length) {
      const shown = missing.slice(0, 10).map((c) => `'${c}'`).join(" ");
      throw new Error(`the prefix has characters the model never saw: ${shown}; use characters of the training corpus`);
    }
    return chars.map((c) => model.index.get(c));
  }

  function argmax(values) {
    let best = 0;
    for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
    return best;
  }

  // mulberry32: a small seeded generator of numbers in [0, 1)
  function random(seed) {
    let a = seed >>> 0;
    return () => {
      a = (a + 0x6d2b79f5) >>> 0;
      let t = a;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }

  // The next id: greedy at temperature 0, else a draw after temperature, top-k and top-p (as charlm's sample_next).
  function sampleNext(logits, options, rand) {
    const { temperature = 0, topK = 0, topP = 1 } = options;
    if (!(temperature > 0)) return argmax(logits);
    const n = logits.length;
    const scaled = Float64Array.from(logits, (v) => v / temperature);
    const top = scaled[argmax(scaled)];
    const weights = scaled.map((v) => Math.exp(v - top));  // unnormalised probabilities
    let order = null;
    if ((topK > 0 && topK < n) || topP < 1) {
      order = Array.from({ length: n }, (_, i) => i).sort((a, b) => scaled[b] - scaled[a] || a - b);
      if (topK > 0 && topK < n) {
        const kth = scaled[order[topK - 1]];
        for (let i = 0; i < n; i++) if (scaled[i] < kth) weights[i] = 0;
      }
      if (topP < 1) {  // drop a character when those ranked above it already hold top_p: the first stays
        const total = weights.reduce((a, b) => a + b, 0);
        let held = 0;
        for (const i of order) {
          const p = weights[i] / total;
          if (held >= topP) weights[i] = 0;
          held += p;
        }
      }
    }
    let u = rand() * weights.reduce((a, b) => a + b, 0);
    let last = 0;
    for (let i = 0; i < n; i++) {
      if (weights[i] === 0) continue;
      last = i;
      u -= weights[i];
      if (u < 0) return i;
    }
    return last;  // rounding left u a hair above zero: the last possible character
  }

  // Characters one at a time after the prefix ("" starts after spec.start, a new line, as charlm generate does).
  // <eod> is shown as a line break and, in a model trained with the reset, zeroes the state before it is read.
  function* generate(model, prefix, length, options = {}) {
    const context = encode(model, clean(model, prefix) || model.spec.start);
    const rand = random(options.seed ?? Math.floor(Math.random() * 2 ** 32));
    const state = initialState(model);
    let logits = null;
    for (const id of context) logits = step(model, state, id);
    for (let t = 0; t < length; t++) {
      const id = sampleNext(logits, options, rand);
      yield model.shown[id];
      if (t + 1 < length) {
        resetAt(model, state, id);
        logits = step(model, state, id);
      }
    }
  }

  // `count` whole items (documents), as charlm generate --items: each starts where a document starts (the
  // model reads <eod> from a zero state, then the prefix) and ends when the model writes <eod> or after
  // `length` characters. Yields {item, begin: prefix}, then {item, char} per character, then {item, ended}.
  function* items(model, count, prefix, length, options = {}) {
    if (model.eod === null) throw new Error("this model has no end-of-document symbol, so it cannot write items");
    const first = clean(model, prefix || "");
    const context = [model.eod, ...(first ? encode(model, first) : [])];
    const rand = random(options.seed ?? Math.floor(Math.random() * 2 ** 32));
    for (let item = 0; item < count; item++) {
      const state = initialState(model);
      let logits = null;
      for (const id of context) logits = step(model, state, id);
      yield { item, begin: first };
      let ended = false;
      for (let t = 0; t < length && !ended; t++) {
        const id = sampleNext(logits, options, rand);
        ended = id === model.eod;
        if (!ended) {
          yield { item, char: model.vocab[id] };
          if (t + 1 < length) logits = step(model, state, id);
        }
      }
      yield { item, ended };
    }
  }

  return { load, initialState, step, encode, clean, sampleNext, random, generate, items, argmax };
})();

if (typeof module !== "undefined") module.exports = CharLM;  // node (tests)

if (typeof document !== "undefined") {
  (() => {
    const $ = (id) => document.getElementById(id);
    const spec = JSON.parse($("charlm-model").textContent);
    const model = CharLM.load(spec);
    const card = spec.card;
    document.title = `${card.name}: charlm demo`;
    $("title").textContent = card.name;
    const rows = [
      ["corpus", card.corpus], ["model", card.model], ["parameters", card.parameters.toLocaleString("en-US")],
      ["vocabulary", `${spec.vocab.length.toLocaleString("en-US")} characters`],
      ["checkpoint", card.checkpoint], [card.loss_name, card.loss],
      ["weights", `${spec.precision}, ${(spec.weight_bytes / 1e6).toFixed(2)} MB`],
    ];
    for (const [name, value] of rows) {
      const dt = document.createElement("dt"), dd = document.createElement("dd");
      dt.textContent = name;
      dd.textContent = value;
      $("card").append(dt, dd);
    }
    $("prefix").value = card.prefix;
    if (model.eod !== null) {  // a model trained on documents: whole items, one per line
      $("mode-label").hidden = false;
      $("count-label").hidden = false;
    }
    let running = null;

    function number(id, low, high, integer) {
      const text = $(id).value.trim(), value = Number(text);
      if (text === "" || !Number.isFinite(value) || value < low || value > high || (integer && !Number.isInteger(value))) {
        throw new Error(`${$(id).dataset.name} must be ${integer ? "an integer " : "a number "}from ${low} to ${high}`);
      }
      return value;
    }

    function finish(message) {
      running = null;
      $("generate").disabled = false;
      $("stop").disabled = true;
      $("status").textContent = message;
    }

    // Where the generated text goes. Text mode: one running text after the prefix. Items mode: one line
    // (a block) per item, its prefix greyed; an item holds no <eod>, it just ends.
    function textSink() {
      let piece = "";
      return {
        take(value) { piece += value; return 1; },
        flush() { $("output-text").append(piece); piece = ""; },
      };
    }

    function itemSink() {
      let piece = "", line = null;
      const flush = () => { if (line && piece) line.append(piece); piece = ""; };
      return {
        take(value) {
          if (value.begin !== undefined) {
            flush();
            const block = document.createElement("div"), start = document.createElement("span");
            block.className = "item";
            start.className = "item-prefix";
            start.textContent = value.begin;
            line = document.createElement("span");
            block.append(start, line);
            $("output-items").append(block);
            return 0;
          }
          if (value.char !== undefined) { piece += value.char; return 1; }
          flush();
          line.parentNode.dataset.ended = String(value.ended);
          return 0;
        },
        flush,
      };
    }

    function showMode(items) {
      $("output").hidden = items;
      $("output-items").hidden = !items;
    }

    function start(event) {
      event.preventDefault();
      let steps, first, sink;
      try {
        const length = number("length", 1, 100000, true);
        const options = { temperature: number("temperature", 0, 100, false), topK: number("top-k", 0, 1e9, true),
                          topP: number("top-p", 0.0001, 1, false) };
        if ($("seed").value.trim() !== "") options.seed = number("seed", 0, 4294967295, true);
        const items = model.eod !== null && $("mode").value === "items";
        showMode(items);
        $("output-prefix").textContent = items ? "" : CharLM.clean(model, $("prefix").value);
        $("output-text").textContent = "";
        $("output-items").textContent = "";
        if (items) {
          steps = CharLM.items(model, number("count", 1, 1000, true), $("prefix").value, length, options);
          sink = itemSink();
        } else {
          steps = CharLM.generate(model, $("prefix").value, length, options);
          sink = textSink();
        }
        first = steps.next();  // encodes the prefix: a bad one throws here
      } catch (error) {
        $("output-prefix").textContent = "";
        $("output-text").textContent = "";
        $("output-items").textContent = "";
        finish(`error: ${error.message}`);
        $("status").dataset.state = "error";
        return;
      }
      const begun = performance.now();
      let written = 0, next = first;
      const run = (running = {});
      $("generate").disabled = true;
      $("stop").disabled = false;
      $("status").dataset.state = "running";
      $("status").textContent = "generating…";
      const chunk = () => {
        if (running !== run) return;
        const until = performance.now() + 25;  // a frame's worth of characters, then let the page draw
        while (!next.done && performance.now() < until) {
          written += sink.take(next.value);
          next = steps.next();
        }
        sink.flush();
        const seconds = (performance.now() - begun) / 1000;
        if (next.done) {
          const rate = written / seconds;
          $("status").dataset.state = "done";
          $("status").dataset.charsPerSecond = rate.toFixed(1);
          finish(`${written} characters in ${seconds.toFixed(2)} s (${Math.round(rate)} chars/s)`);
        } else {
          setTimeout(chunk, 0);
        }
      };
      chunk();
    }

    $("controls").addEventListener("submit", start);
    $("stop").addEventListener("click", () => {
      $("status").dataset.state = "stopped";
      finish("stopped");
    });
  })();
}
