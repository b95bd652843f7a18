// Runs the model code of a page written by `charlm export --html` in node, for tests/test_demo.py.
// Usage: node demo_node.js REQUESTS.json  ->  prints one JSON array of results.
// Each request {page, prefix, length} gets the logits after every character of the prefix and of the
// greedy continuation (one row per step), and the greedy text itself, computed by the page's own script.
"use strict";
const fs = require("fs");
const vm = require("vm");

function pageParts(file) {
  const html = fs.readFileSync(file, "utf8");
  const spec = html.match(/<script id="charlm-model" type="application\/json">([\s\S]*?)<\/script>/)[1];
  const code = html.match(/<script id="charlm-code">([\s\S]*?)<\/script>/)[1];
  const context = { module: {}, atob, performance };  // no document: the page's controls stay out
  vm.runInNewContext(code, context);
  return { CharLM: context.module.exports, spec: JSON.parse(spec) };
}

const results = [];
for (const request of JSON.parse(fs.readFileSync(process.argv[2], "utf8"))) {
  const { CharLM, spec } = pageParts(request.page);
  const model = CharLM.load(spec);
  const state = CharLM.initialState(model);
  const logits = [];
  let last = null;
  for (const id of CharLM.encode(model, request.prefix)) {
    last = CharLM.step(model, state, id);
    logits.push(Array.from(last));
  }
  let text = "";
  for (let t = 0; t < request.length; t++) {
    const id = CharLM.argmax(last);
    text += model.vocab[id];
    last = CharLM.step(model, state, id);
    logits.push(Array.from(last));
  }
  const begun = performance.now();
  const timed = Array.from(CharLM.generate(model, request.prefix, request.length, { temperature: 0 })).join("");
  results.push({ logits, greedy: text, generated: timed, seconds: (performance.now() - begun) / 1000 });
}
process.stdout.write(JSON.stringify(results));
