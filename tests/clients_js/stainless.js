// npm replicate-stainless@0.9.0 (Replicate's Stainless-generated TypeScript SDK) against cogport
// (tests/test_clients_js_stainless.py). Configured as its README says: REPLICATE_BASE_URL and
// REPLICATE_API_TOKEN from the environment (the `baseURL` and `bearerToken` options are the same settings).
// argv[2]: JSON {hello, streaming, image, trainable, png (base64), csv}.
const Replicate = require("replicate-stainless");

const cfg = JSON.parse(process.argv[2]);
const requests = [];
const replicate = new Replicate({
  fetch: (url, init = {}) => {
    const request = url instanceof Request ? url : null;
    const headers = new Headers(init.headers || (request && request.headers) || {});
    requests.push({
      method: init.method || (request && request.method) || "GET",
      url: request ? request.url : String(url),
      prefer: headers.get("prefer"),
    });
    return fetch(url, init);
  },
});

async function main() {
  const out = { baseURL: replicate.baseURL };

  // run: blocking (Prefer: wait) by version, polling (the SDK's default) by model name.
  out.runBlock = await replicate.run(`admin/hello-world:${cfg.hello}`, {
    input: { text: "block" },
    wait: { mode: "block" },
  });
  out.runPoll = await replicate.run("admin/hello-world", { input: { text: "poll" }, wait: { mode: "poll", interval: 50 } });

  // predictions.create without Prefer, then wait; predictions.get.
  const queued = await replicate.predictions.create({ version: cfg.hello, input: { text: "queued" } });
  const waited = await replicate.wait(queued, { interval: 50 }, () => false);
  out.waited = { id: waited.id, status: waited.status, output: waited.output, urls: waited.urls };
  out.got = await replicate.predictions.get({ prediction_id: queued.id });

  // A Buffer file input (uploaded through the Files API by run), in a queued (polled) prediction; the output
  // URL asked for as a FileOutput.
  const png = Buffer.from(cfg.png, "base64");
  const output = await replicate.run(`admin/image:${cfg.image}`, {
    input: { image: png, width: 2 },
    wait: { mode: "poll", interval: 50 },
    useFileOutput: true,
  });
  out.fileOutput = {
    type: typeof output,
    url: String(output),
    bytes: Buffer.from(await (await fetch(String(output))).arrayBuffer()).toString("base64"),
  };

  // Streaming: the SDK has no stream method; the prediction still carries urls.stream.
  out.hasStream = typeof replicate.stream === "function";
  const streaming = await replicate.predictions.create({
    version: cfg.streaming,
    input: { prompt: "a b" },
    Prefer: "wait",
  });
  out.streamingPrediction = { urls: streaming.urls, output: streaming.output };

  // Auto-pagination over the predictions list (absolute `next` URLs).
  out.predictions = [];
  for await (const prediction of replicate.predictions.list()) out.predictions.push(prediction.id);

  // Trainings: files.create for the CSV, trainings.create, trainings.get until done, then the trained version.
  const csv = await replicate.files.create({
    content: new File([cfg.csv], "topics.csv", { type: "text/csv" }),
  });
  let training = await replicate.trainings.create({
    model_owner: "admin",
    model_name: "trainable",
    version_id: cfg.trainable,
    destination: "admin/topics",
    input: { data: csv.urls.get },
  });
  while (!["succeeded", "failed", "canceled"].includes(training.status)) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    training = await replicate.trainings.get({ training_id: training.id });
  }
  out.training = { status: training.status, output: training.output, error: training.error };
  if (training.status === "succeeded") {
    out.trained = await replicate.run(training.output.version, {
      input: { text: "the striker scored a goal in the stadium" },
      wait: { mode: "block" },
    });
  }

  // Deployments.
  out.deploymentCreated = await replicate.deployments.create({
    name: "stainless",
    model: "admin/hello-world",
    version: cfg.hello,
    hardware: "cpu",
    min_instances: 0,
    max_instances: 1,
  });
  const deployed = await replicate.deployments.predictions.create({
    deployment_owner: "admin",
    deployment_name: "stainless",
    input: { text: "deployed" },
    Prefer: "wait",
  });
  const deployedDone = await replicate.wait(deployed, { interval: 50 }, () => false);
  out.deployed = { status: deployedDone.status, output: deployedDone.output, deployment: deployedDone.deployment };
  await replicate.deployments.delete({ deployment_owner: "admin", deployment_name: "stainless" });

  // An error: an unknown prediction is the SDK's NotFoundError.
  try {
    await replicate.predictions.get({ prediction_id: "nosuchprediction" });
    out.notFound = null;
  } catch (e) {
    out.notFound = { name: e.constructor.name, status: e.status };
  }

  out.requests = requests;
  console.log(JSON.stringify(out));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
