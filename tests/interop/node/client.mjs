#!/usr/bin/env node
// A Node.js client for gradserve: @grpc/grpc-js plus @grpc/proto-loader, loading the repository's
// protos/ at run time (no generated code). It calls health, Evaluate, Jacobian, StreamJacobian
// (dense rows and CSR runs) and Train against a live server and checks every number against a
// closed form; "onnx" sends an .onnx file exported from PyTorch (tests/data/onnx) as the graph
// source.
//
//   node tests/interop/node/client.mjs --target 127.0.0.1:50051 [--only evaluate,train]
//
// Exit codes: 0 all checks passed; 1 a check failed or an RPC errored; 2 bad usage;
// 3 every selected check passed except Train, which the server answered UNIMPLEMENTED.

import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const HERE = dirname(fileURLToPath(import.meta.url));
const GRPC_JS_VERSION = createRequire(import.meta.url)("@grpc/grpc-js/package.json").version;
const REPO_PROTOS = resolve(HERE, "..", "..", "..", "protos");
const VENDORED_PROTOS = join(HERE, "protos"); // grpc/health/v1/health.proto, verbatim upstream
const ALL_CHECKS = ["health", "evaluate", "jacobian", "stream_jacobian", "train", "onnx"];
const ONNX_MLP = resolve(HERE, "..", "..", "data", "onnx", "mlp_torchscript_opset18.onnx");
const EXIT_FAIL = 1;
const EXIT_USAGE = 2;
const EXIT_TRAIN_UNIMPLEMENTED = 3;

// ---------------------------------------------------------------------------------------------
// Command line

function usage(message) {
  if (message) console.error(`client: ${message}`);
  console.error(
    "usage: node client.mjs --target HOST:PORT [--only CHECK,...] [--deadline SECONDS]\n" +
      `  checks: ${ALL_CHECKS.join(", ")}`,
  );
  process.exit(EXIT_USAGE);
}

function parseArgs(argv) {
  const opts = { target: "", only: ALL_CHECKS, deadline: 60 };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const [flag, inline] = arg.includes("=") ? arg.split(/=(.*)/s, 2) : [arg, undefined];
    const value = () => {
      if (inline !== undefined) return inline;
      if (i + 1 >= argv.length) usage(`${flag} needs a value`);
      return argv[++i];
    };
    if (flag === "--target") opts.target = value();
    else if (flag === "--only") opts.only = value().split(",").filter(Boolean);
    else if (flag === "--deadline") opts.deadline = Number(value());
    else if (flag === "-h" || flag === "--help") usage();
    else usage(`unknown argument ${arg}`);
  }
  if (!opts.target) usage("--target is required");
  for (const c of opts.only) if (!ALL_CHECKS.includes(c)) usage(`unknown check ${c}`);
  if (!(opts.deadline > 0)) usage("--deadline must be a positive number of seconds");
  return opts;
}

// ---------------------------------------------------------------------------------------------
// Failures

class CheckFailed extends Error {}

function fail(message) {
  throw new CheckFailed(message);
}

function assertClose(what, got, want, { rtol = 1e-12, atol = 1e-12 } = {}) {
  if (!Number.isFinite(got) || Math.abs(got - want) > atol + rtol * Math.abs(want)) {
    fail(`${what}: got ${got}, want ${want} (rtol ${rtol}, atol ${atol})`);
  }
}

function assertAllClose(what, got, want, tol) {
  if (got.length !== want.length) fail(`${what}: got ${got.length} values, want ${want.length}`);
  for (let i = 0; i < want.length; i++) assertClose(`${what}[${i}]`, got[i], want[i], tol);
}

function assertShape(what, got, want) {
  if (got.length !== want.length || got.some((d, i) => d !== want[i])) {
    fail(`${what}: shape [${got}], want [${want}]`);
  }
}

// ---------------------------------------------------------------------------------------------
// Tensors: little-endian raw bytes, row-major (protos/gradserve/v1/tensor.proto)

const ITEMSIZE = { DTYPE_FLOAT32: 4, DTYPE_FLOAT64: 8, DTYPE_INT64: 8, DTYPE_INT32: 4, DTYPE_BOOL: 1 };

const product = (shape) => shape.reduce((a, b) => a * b, 1);

/** A float64 Tensor message of the given shape, from numbers in row-major order. */
function f64(shape, values) {
  const flat = Array.isArray(values) || ArrayBuffer.isView(values) ? values : [values];
  if (flat.length !== product(shape)) throw new Error(`f64: ${flat.length} values for [${shape}]`);
  const data = Buffer.alloc(flat.length * 8);
  flat.forEach((v, i) => data.writeDoubleLE(v, i * 8));
  return { dtype: "DTYPE_FLOAT64", shape: shape.map(String), data };
}

/** A float32 Tensor message of the given shape, from numbers in row-major order. */
function f32(shape, values) {
  if (values.length !== product(shape)) throw new Error(`f32: ${values.length} values for [${shape}]`);
  const data = Buffer.alloc(values.length * 4);
  values.forEach((v, i) => data.writeFloatLE(v, i * 4));
  return { dtype: "DTYPE_FLOAT32", shape: shape.map(String), data };
}

/** A Tensor message as {shape: number[], values: Float64Array}; floats only. */
function decode(what, tensor) {
  if (!tensor) fail(`${what}: no tensor`);
  const shape = tensor.shape.map(Number);
  const itemsize = ITEMSIZE[tensor.dtype];
  if (!itemsize) fail(`${what}: unexpected dtype ${tensor.dtype}`);
  const n = product(shape);
  const data = tensor.data;
  if (data.length !== n * itemsize) {
    fail(`${what}: ${data.length} bytes for shape [${shape}] of ${tensor.dtype}`);
  }
  const values = new Float64Array(n);
  if (tensor.dtype === "DTYPE_FLOAT64") for (let i = 0; i < n; i++) values[i] = data.readDoubleLE(i * 8);
  else if (tensor.dtype === "DTYPE_FLOAT32") for (let i = 0; i < n; i++) values[i] = data.readFloatLE(i * 4);
  else fail(`${what}: expected a float tensor, got ${tensor.dtype}`);
  return { shape, values };
}

/** An INT64 Tensor message (a CSR matrix's indptr or indices) as a Number[]. */
function decodeInt64(what, tensor) {
  if (!tensor || tensor.dtype !== "DTYPE_INT64") fail(`${what}: expected an INT64 tensor`);
  const n = product(tensor.shape.map(Number));
  if (tensor.data.length !== n * 8) fail(`${what}: ${tensor.data.length} bytes for ${n} int64s`);
  return Array.from({ length: n }, (_, i) => Number(tensor.data.readBigInt64LE(i * 8)));
}

// ---------------------------------------------------------------------------------------------
// Graphs (protos/gradserve/v1/graph.proto)

const input = (name, shape = []) => ({ name, dtype: "DTYPE_FLOAT64", shape: shape.map(String) });
const node = (name, op, inputs, attrs = {}) => ({ name, op, inputs, attrs });
const constant = (name, value) => node(name, "constant", [], { value: { tensor: f64([], value) } });

// ---------------------------------------------------------------------------------------------
// Calls

function loadServices() {
  for (const dir of [REPO_PROTOS, VENDORED_PROTOS]) {
    if (!existsSync(dir)) fail(`proto directory ${dir} is missing`);
  }
  const definition = protoLoader.loadSync(
    ["gradserve/v1/gradient_service.proto", "grpc/health/v1/health.proto"],
    {
      includeDirs: [REPO_PROTOS, VENDORED_PROTOS],
      keepCase: true,
      longs: String,
      enums: String,
      defaults: true,
      oneofs: true,
    },
  );
  const pkg = grpc.loadPackageDefinition(definition);
  return { Gradient: pkg.gradserve.v1.Gradient, Health: pkg.grpc.health.v1.Health };
}

class Rpc {
  constructor(target, deadlineSeconds) {
    const { Gradient, Health } = loadServices();
    const credentials = grpc.credentials.createInsecure();
    const options = { "grpc.max_receive_message_length": 64 << 20 };
    this.gradient = new Gradient(target, credentials, options);
    this.health = new Health(target, credentials, options);
    this.deadlineSeconds = deadlineSeconds;
  }

  deadline() {
    return new Date(Date.now() + this.deadlineSeconds * 1000);
  }

  waitForReady() {
    return new Promise((ok, ko) =>
      this.gradient.waitForReady(this.deadline(), (err) =>
        err ? ko(new Error(`could not connect: ${err.message}`)) : ok(),
      ),
    );
  }

  unary(client, method, request) {
    return new Promise((ok, ko) =>
      client[method](request, { deadline: this.deadline() }, (err, response) =>
        err ? ko(err) : ok(response),
      ),
    );
  }

  /** All the messages of a server stream, in order. */
  async stream(method, request) {
    const call = this.gradient[method](request, { deadline: this.deadline() });
    const messages = [];
    for await (const message of call) messages.push(message);
    return messages;
  }

  close() {
    this.gradient.close();
    this.health.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Checks: each returns a one-line summary

async function checkHealth(rpc) {
  const response = await rpc.unary(rpc.health, "Check", { service: "" });
  if (response.status !== "SERVING") fail(`Health/Check: status ${response.status}, want SERVING`);
  return "Health/Check: SERVING";
}

async function checkEvaluate(rpc) {
  // y = x*x + 3x and the article's z = ln(sin(x^3)^2), at four points.
  const graph = {
    inputs: [input("x", [4])],
    nodes: [
      constant("three", 3),
      node("xx", "multiply", ["x", "x"]),
      node("tx", "multiply", ["three", "x"]),
      node("y", "add", ["xx", "tx"]),
      node("x3", "multiply", ["xx", "x"]),
      node("s", "sin", ["x3"]),
      node("s2", "square", ["s"]),
      node("z", "log", ["s2"]),
    ],
    outputs: ["y", "z"],
    opset: "0",
  };
  const xs = [0.5, 1.25, -0.75, 1.1];
  const response = await rpc.unary(rpc.gradient, "Evaluate", {
    graph,
    inputs: { x: f64([4], xs) },
    outputs: [],
  });
  if (!response.graph_id) fail("Evaluate: empty graph_id");
  const y = decode("Evaluate y", response.outputs.y);
  const z = decode("Evaluate z", response.outputs.z);
  assertShape("Evaluate y", y.shape, [4]);
  assertShape("Evaluate z", z.shape, [4]);
  assertAllClose("Evaluate y = x*x + 3x", y.values, xs.map((x) => x * x + 3 * x));
  assertAllClose(
    "Evaluate z = ln(sin(x^3)^2)",
    z.values,
    xs.map((x) => Math.log(Math.sin(x ** 3) ** 2)),
    { rtol: 1e-12, atol: 1e-12 },
  );

  // The same graph again by graph_id only.
  const again = await rpc.unary(rpc.gradient, "Evaluate", {
    graph_id: response.graph_id,
    inputs: { x: f64([4], [2, 2, 2, 2]) },
    outputs: ["y"],
  });
  const y2 = decode("Evaluate(graph_id) y", again.outputs.y);
  assertAllClose("Evaluate(graph_id) y", y2.values, [10, 10, 10, 10]);
  if (again.graph_id !== response.graph_id) fail("Evaluate(graph_id): a different graph_id came back");
  return `Evaluate: y = x*x+3x and ln(sin(x^3)^2) at ${xs.length} points, and again by graph_id`;
}

// f(x, y) = 3x^2 y, g(x, y) = 2x + y^8: J = [[6xy, 3x^2], [2, 8y^7]].
const FG_GRAPH = {
  inputs: [input("x"), input("y")],
  nodes: [
    constant("two", 2),
    constant("three", 3),
    constant("eight", 8),
    node("xx", "multiply", ["x", "x"]),
    node("xxy", "multiply", ["xx", "y"]),
    node("f", "multiply", ["three", "xxy"]),
    node("tx", "multiply", ["two", "x"]),
    node("y8", "power", ["y", "eight"]),
    node("g", "add", ["tx", "y8"]),
  ],
  outputs: ["f", "g"],
  opset: "0",
};

// v(x) = [ln(x^2), sin(3x)] for a scalar x: dv/dx = [2/x, 3 cos(3x)].
const CHAIN_GRAPH = {
  inputs: [input("x")],
  nodes: [
    constant("three", 3),
    node("x2", "square", ["x"]),
    node("a", "log", ["x2"]),
    node("x3", "multiply", ["three", "x"]),
    node("b", "sin", ["x3"]),
    node("v", "stack", ["a", "b"], { axis: { i: "0" } }),
  ],
  outputs: ["v"],
  opset: "0",
};

async function checkJacobian(rpc) {
  const [x, y] = [1.5, -0.8];
  const response = await rpc.unary(rpc.gradient, "Jacobian", {
    graph: FG_GRAPH,
    inputs: { x: f64([], x), y: f64([], y) },
    of: ["f", "g"],
    wrt: ["x", "y"],
    mode: "JACOBIAN_MODE_AUTO",
  });
  const want = { "f/x": 6 * x * y, "f/y": 3 * x * x, "g/x": 2, "g/y": 8 * y ** 7 };
  const order = response.blocks.map((b) => `${b.of}/${b.wrt}`);
  if (order.join(",") !== "f/x,f/y,g/x,g/y") fail(`Jacobian: blocks in order ${order}, want f/x,f/y,g/x,g/y`);
  for (const block of response.blocks) {
    const key = `${block.of}/${block.wrt}`;
    if (block.structure !== "dense") fail(`Jacobian ${key}: structure ${block.structure}, want dense`);
    assertShape(`Jacobian ${key} shape`, block.shape.map(Number), []);
    const dense = decode(`Jacobian ${key}`, block.dense);
    assertShape(`Jacobian ${key} dense`, dense.shape, []);
    assertClose(`Jacobian d${block.of}/d${block.wrt}`, dense.values[0], want[key]);
  }
  assertClose("Jacobian value f", decode("f", response.outputs.f).values[0], 3 * x * x * y);
  assertClose("Jacobian value g", decode("g", response.outputs.g).values[0], 2 * x + y ** 8);

  // The vector chain rule, in both modes.
  const x0 = 0.7;
  for (const mode of ["JACOBIAN_MODE_FORWARD", "JACOBIAN_MODE_REVERSE"]) {
    const chain = await rpc.unary(rpc.gradient, "Jacobian", {
      graph: CHAIN_GRAPH,
      inputs: { x: f64([], x0) },
      of: [],
      wrt: [],
      mode,
    });
    if (chain.blocks.length !== 1) fail(`Jacobian (${mode}): ${chain.blocks.length} blocks, want 1`);
    const [block] = chain.blocks;
    if (block.of !== "v" || block.wrt !== "x") fail(`Jacobian (${mode}): block ${block.of}/${block.wrt}`);
    const dense = decode(`Jacobian (${mode}) dv/dx`, block.dense);
    assertShape(`Jacobian (${mode}) dv/dx`, dense.shape, [2]);
    assertAllClose(`Jacobian (${mode}) dv/dx`, dense.values, [2 / x0, 3 * Math.cos(3 * x0)]);
  }
  return "Jacobian: [[6xy, 3x^2], [2, 8y^7]] and d[ln(x^2), sin(3x)]/dx (forward and reverse)";
}

async function checkStreamJacobian(rpc) {
  // y = x * sum(x) for x of shape (n,): dy_i/dx_j = [i == j] * sum(x) + x_i.
  const n = 37;
  const rowsPerMessage = 5;
  const xs = Array.from({ length: n }, (_, i) => Math.sin(i + 1));
  const s = xs.reduce((a, b) => a + b, 0);
  const graph = {
    inputs: [input("x", [n])],
    nodes: [node("s", "sum", ["x"]), node("y", "multiply", ["x", "s"])],
    outputs: ["y"],
    opset: "0",
  };
  const blocks = await rpc.stream("StreamJacobian", {
    graph,
    inputs: { x: f64([n], xs) },
    of: ["y"],
    wrt: ["x"],
    mode: "JACOBIAN_MODE_AUTO",
    rows_per_message: String(rowsPerMessage),
  });
  if (blocks.length < 2) fail(`StreamJacobian: ${blocks.length} row blocks, want several`);
  const assembled = new Float64Array(n * n).fill(NaN);
  let next = 0;
  for (const [k, block] of blocks.entries()) {
    const what = `StreamJacobian block ${k}`;
    if (block.of !== "y" || block.wrt !== "x") fail(`${what}: ${block.of}/${block.wrt}, want y/x`);
    assertShape(`${what} shape`, block.shape.map(Number), [n, n]);
    const start = Number(block.row_start);
    const count = Number(block.row_count);
    if (start !== next) fail(`${what}: row_start ${start}, want ${next}`);
    if (count < 1 || count > rowsPerMessage) fail(`${what}: row_count ${count}, want 1..${rowsPerMessage}`);
    const rows = decode(what, block.rows);
    assertShape(`${what} rows`, rows.shape, [count, n]);
    assembled.set(rows.values, start * n);
    next = start + count;
  }
  if (next !== n) fail(`StreamJacobian: rows cover [0, ${next}), want [0, ${n})`);
  const want = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) want[i * n + j] = (i === j ? s : 0) + xs[i];
  assertAllClose("StreamJacobian J", assembled, want);

  // The same Jacobian in one unary message agrees with the stream.
  const unary = await rpc.unary(rpc.gradient, "Jacobian", {
    graph_id: blocks[0].graph_id,
    inputs: { x: f64([n], xs) },
    of: ["y"],
    wrt: ["x"],
    mode: "JACOBIAN_MODE_AUTO",
  });
  assertAllClose("Jacobian(graph_id) vs StreamJacobian", decode("J", unary.blocks[0].dense).values, assembled);

  // Asked for structure, the stream sends CSR runs of rows: d(x*x)/dx = diag(2x).
  const squares = {
    inputs: [input("x", [n])],
    nodes: [node("q", "multiply", ["x", "x"])],
    outputs: ["q"],
    opset: "0",
  };
  const runs = await rpc.stream("StreamJacobian", {
    graph: squares,
    inputs: { x: f64([n], xs) },
    structured: true,
    rows_per_message: String(rowsPerMessage),
  });
  let row = 0;
  for (const [k, run] of runs.entries()) {
    const what = `structured StreamJacobian block ${k}`;
    if (run.structure !== "sparse") fail(`${what}: ${run.structure}, want sparse`);
    const start = Number(run.row_start);
    const count = Number(run.row_count);
    if (start !== row || Number(run.sparse.rows) !== count || Number(run.sparse.cols) !== n) {
      fail(`${what}: rows ${start}+${count} as ${run.sparse.rows}x${run.sparse.cols}, want ${row}+..x${n}`);
    }
    const indptr = decodeInt64(`${what} indptr`, run.sparse.indptr);
    const indices = decodeInt64(`${what} indices`, run.sparse.indices);
    const values = decode(`${what} values`, run.sparse.values).values;
    const wantIndptr = Array.from({ length: count + 1 }, (_, i) => i); // one entry a row, from 0
    const wantIndices = Array.from({ length: count }, (_, i) => start + i);
    if (indptr.join() !== wantIndptr.join()) fail(`${what}: indptr [${indptr}], want [${wantIndptr}]`);
    if (indices.join() !== wantIndices.join()) fail(`${what}: indices [${indices}], want [${wantIndices}]`);
    assertAllClose(`${what} values`, values, wantIndices.map((i) => 2 * xs[i]));
    row = start + count;
  }
  if (row !== n) fail(`structured StreamJacobian: rows cover [0, ${row}), want [0, ${n})`);
  return (
    `StreamJacobian: ${n}x${n} in ${blocks.length} row blocks, assembled, = diag(sum x) + x 1^T;` +
    ` structured: diag(2x) in ${runs.length} CSR runs`
  );
}

// Linear regression: pred = w*X + b, loss = mse(pred, Y), with Y = 2X - 0.5 exactly.
const TRUE_W = 2;
const TRUE_B = -0.5;

function sgdReplay(X, Y, { w, b, lr, batchSize, steps }) {
  // Plain SGD (no momentum, no shuffle) on the mean squared error, as torch.optim.SGD would.
  const n = X.length;
  const losses = [];
  for (let step = 0; step < steps; step++) {
    const start = (step * batchSize) % n;
    let loss = 0;
    let gw = 0;
    let gb = 0;
    for (let i = start; i < start + batchSize; i++) {
      const r = w * X[i] + b - Y[i];
      loss += r * r;
      gw += 2 * r * X[i];
      gb += 2 * r;
    }
    losses.push(loss / batchSize);
    w -= (lr * gw) / batchSize;
    b -= (lr * gb) / batchSize;
  }
  return { w, b, losses };
}

async function checkTrain(rpc) {
  const n = 64;
  const batchSize = 16;
  const epochs = 25;
  const lr = 0.5;
  const steps = (n / batchSize) * epochs;
  const X = Array.from({ length: n }, (_, i) => -1 + (2 * i) / (n - 1));
  const Y = X.map((x) => TRUE_W * x + TRUE_B);
  const graph = {
    inputs: [input("w"), input("b"), input("X", [-1]), input("Y", [-1])],
    nodes: [
      node("wx", "multiply", ["w", "X"]),
      node("pred", "add", ["wx", "b"]),
      node("loss", "mse", ["pred", "Y"], { reduction: { s: "mean" } }),
    ],
    outputs: ["loss"],
    opset: "0",
  };
  const events = await rpc.stream("Train", {
    graph,
    loss: "loss",
    params: { w: f64([], 0), b: f64([], 0) },
    inline_data: { tensors: { X: f64([n], X), Y: f64([n], Y) } },
    batch_size: String(batchSize),
    epochs: String(epochs),
    max_steps: "0",
    shuffle: false,
    seed: "0",
    optimizer: { sgd: { lr, momentum: 0, nesterov: false, weight_decay: 0, dampening: 0 } },
    report_every: "1",
    checkpoint_every: "40",
  });

  const stepEvents = events.filter((e) => e.event === "step").map((e) => e.step);
  const checkpoints = events.filter((e) => e.event === "checkpoint").map((e) => e.checkpoint);
  const results = events.filter((e) => e.event === "result").map((e) => e.result);
  if (results.length !== 1) fail(`Train: ${results.length} result events, want 1`);
  if (events.at(-1).event !== "result") fail(`Train: last event is ${events.at(-1).event}, want result`);
  const [result] = results;
  if (stepEvents.length !== steps) fail(`Train: ${stepEvents.length} step events, want ${steps}`);
  stepEvents.forEach((s, i) => {
    if (Number(s.step) !== i + 1) fail(`Train: step event ${i} has step ${s.step}, want ${i + 1}`);
    if (!s.finite) fail(`Train: step ${s.step} is not finite`);
    assertClose(`Train step ${s.step} lr`, s.lr, lr);
  });
  if (checkpoints.length < 1) fail("Train: no checkpoint event with checkpoint_every = 40");
  // every 40 steps, and one after the last step (the run's final checkpoint)
  const want = [];
  for (let s = 40; s <= steps; s += 40) want.push(s);
  if (steps % 40 !== 0) want.push(steps);
  const got = checkpoints.map((c) => Number(c.step));
  if (got.join() !== want.join()) fail(`Train: checkpoints at steps ${got}, want ${want}`);
  if (Number(result.steps) !== steps) fail(`Train: result.steps ${result.steps}, want ${steps}`);

  // The loss decreases, and the fit reaches the truth.
  const losses = stepEvents.map((s) => s.loss);
  const first = losses[0];
  const last = losses.at(-1);
  if (!(last < first * 1e-6)) fail(`Train: loss went from ${first} to ${last}, want a decrease by 1e6`);
  for (let k = 4; k < losses.length; k += 4) {
    const [before, after] = [losses[k - 4], losses[k]]; // same batch one epoch apart
    if (!(after <= before + 1e-24)) fail(`Train: loss rose from ${before} (step ${k - 3}) to ${after} (step ${k + 1})`);
  }
  assertClose("Train final_loss", result.final_loss, last, { rtol: 1e-12, atol: 0 });
  const w = decode("Train w", result.params.w).values[0];
  const b = decode("Train b", result.params.b).values[0];
  assertClose("Train w vs truth", w, TRUE_W, { rtol: 0, atol: 1e-4 });
  assertClose("Train b vs truth", b, TRUE_B, { rtol: 0, atol: 1e-4 });

  // Without shuffling, SGD is deterministic: replay it here and compare step by step.
  const replay = sgdReplay(X, Y, { w: 0, b: 0, lr, batchSize, steps });
  assertAllClose("Train losses vs replay", losses, replay.losses, { rtol: 1e-9, atol: 1e-15 });
  assertClose("Train w vs replay", w, replay.w, { rtol: 1e-9, atol: 1e-12 });
  assertClose("Train b vs replay", b, replay.b, { rtol: 1e-9, atol: 1e-12 });
  return (
    `Train: ${steps} SGD steps, ${checkpoints.length} checkpoints, loss ${first.toExponential(2)} -> ` +
    `${last.toExponential(2)}, w = ${w.toFixed(6)}, b = ${b.toFixed(6)} (truth ${TRUE_W}, ${TRUE_B})`
  );
}

async function checkOnnx(rpc) {
  // The MLP exported by torch.onnx (logits = fc2(relu(fc1(input))), input (batch, 4)), sent as
  // the graph source. Its weights are initializers, so inputs with defaults: only the data is
  // sent. d sum(logits) / d fc2.bias is the batch size for each of the 3 classes, exactly.
  const model = readFileSync(ONNX_MLP);
  const n = 5;
  const xs = Array.from({ length: n * 4 }, (_, i) => Math.sin(i + 1));
  const request = {
    onnx_model: model,
    inputs: { input: f32([n, 4], xs) },
    cotangents: { logits: f32([n, 3], new Array(n * 3).fill(1)) },
    wrt: ["fc2.bias", "fc1.weight"],
  };
  const response = await rpc.unary(rpc.gradient, "Vjp", request);
  if (!response.graph_id) fail("Vjp(onnx_model): empty graph_id");
  assertShape("Vjp(onnx_model) logits", decode("logits", response.outputs.logits).shape, [n, 3]);
  const bias = decode("Vjp(onnx_model) d/d fc2.bias", response.gradients["fc2.bias"]);
  assertShape("Vjp(onnx_model) d/d fc2.bias", bias.shape, [3]);
  assertAllClose("Vjp(onnx_model) d sum(logits)/d fc2.bias", bias.values, [n, n, n], { rtol: 0, atol: 0 });
  const weight = decode("Vjp(onnx_model) d/d fc1.weight", response.gradients["fc1.weight"]);
  assertShape("Vjp(onnx_model) d/d fc1.weight", weight.shape, [16, 4]);

  // The same model by graph_id, with other data: the same bias gradient for another batch.
  const again = await rpc.unary(rpc.gradient, "Vjp", {
    ...request,
    onnx_model: undefined,
    graph_id: response.graph_id,
    inputs: { input: f32([2, 4], xs.slice(0, 8)) },
    cotangents: { logits: f32([2, 3], [1, 1, 1, 1, 1, 1]) },
  });
  const bias2 = decode("Vjp(graph_id) d/d fc2.bias", again.gradients["fc2.bias"]);
  assertAllClose("Vjp(graph_id) d sum(logits)/d fc2.bias", bias2.values, [2, 2, 2], { rtol: 0, atol: 0 });
  return `Vjp of an .onnx file (${model.length} bytes) as the graph source: d sum(logits)/d fc2.bias = ${n}, then by graph_id`;
}

const CHECKS = {
  health: checkHealth,
  evaluate: checkEvaluate,
  jacobian: checkJacobian,
  stream_jacobian: checkStreamJacobian,
  train: checkTrain,
  onnx: checkOnnx,
};

// ---------------------------------------------------------------------------------------------

function describe(err) {
  if (err instanceof CheckFailed) return `MISMATCH ${err.message}`;
  if (err && typeof err.code === "number" && err.details !== undefined) {
    return `RPC ERROR ${grpc.status[err.code]}: ${err.details}`;
  }
  return `ERROR ${err?.stack ?? err}`;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const started = performance.now();
  let rpc;
  try {
    rpc = new Rpc(opts.target, opts.deadline);
    await rpc.waitForReady();
  } catch (err) {
    console.error(`client: ${opts.target}: ${err?.message ?? err}`);
    return EXIT_FAIL;
  }
  let failed = 0;
  let trainUnimplemented = false;
  for (const name of opts.only) {
    const t0 = performance.now();
    try {
      const summary = await CHECKS[name](rpc);
      console.log(`ok   ${summary} (${(performance.now() - t0).toFixed(0)} ms)`);
    } catch (err) {
      if (name === "train" && err?.code === grpc.status.UNIMPLEMENTED) {
        trainUnimplemented = true;
        console.log(`TODO Train: the server answered UNIMPLEMENTED: ${err.details}`);
      } else {
        failed++;
        console.log(`FAIL ${name}: ${describe(err)}`);
      }
    }
  }
  rpc.close();
  const seconds = ((performance.now() - started) / 1000).toFixed(2);
  const passed = opts.only.length - failed - (trainUnimplemented ? 1 : 0);
  console.log(
    `node client (grpc-js ${GRPC_JS_VERSION}, node ${process.version}) against ${opts.target}: ` +
      `${passed}/${opts.only.length} passed` +
      (failed ? `, ${failed} FAILED` : "") +
      (trainUnimplemented ? ", Train UNIMPLEMENTED" : "") +
      ` in ${seconds} s`,
  );
  if (failed) return EXIT_FAIL;
  return trainUnimplemented ? EXIT_TRAIN_UNIMPLEMENTED : 0;
}

process.exitCode = await main().catch((err) => {
  console.error(`client: ${describe(err)}`);
  return EXIT_FAIL;
});
