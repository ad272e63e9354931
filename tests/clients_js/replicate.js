// npm replicate@1.4.0 driven the way its README shows, against cogport (tests/test_clients_js_replicate.py).
// argv[2]: JSON {baseUrl, auth, hello, streaming, image, trainable, png (base64), csv}.
// Prints one JSON line: what each path returned, and every request the client made (method, URL, Prefer).
const Replicate = require("replicate");

const cfg = JSON.parse(process.argv[2]);
const requests = [];
const replicate = new Replicate({
  auth: cfg.auth,
  baseUrl: cfg.baseUrl,
  fetch: (url, init = {}) => {
    const headers = new Headers(init.headers || {});
    requests.push({ method: init.method || "GET", url: String(url), prefer: headers.get("prefer") });
    return fetch(url, init);
  },
});

async function bytesOf(output) {
  // A FileOutput (https and data: URLs) or the URL string itself (any other scheme).
  if (typeof output === "string") return Buffer.from(await (await fetch(output)).arrayBuffer());
  return Buffer.from(await (await output.blob()).arrayBuffer());
}

async function main() {
  const out = {};

  // replicate.run: blocks with Prefer: wait, by version and by model name.
  out.runByVersion = await replicate.run(`admin/hello-world:${cfg.hello}`, { input: { text: "run" } });
  out.runByModel = await replicate.run("admin/hello-world", { input: { text: "by model" } });

  // predictions.create without wait, then replicate.wait.
  const queued = await replicate.predictions.create({ version: cfg.hello, input: { text: "queued" } });
  out.queuedStatus = queued.status;
  const waited = await replicate.wait(queued, { interval: 50 });
  out.waited = { id: waited.id, status: waited.status, output: waited.output, urls: waited.urls };
  out.got = await replicate.predictions.get(queued.id);

  // A file input (a Buffer), uploaded through the Files API and passed by URL, in a waited run and in a
  // queued prediction (created without wait, run later by the server); a file output read back.
  const png = Buffer.from(cfg.png, "base64");
  const fileOut = await replicate.run(`admin/image:${cfg.image}`, { input: { image: png, width: 2 } });
  out.fileOutput = {
    type: typeof fileOut,
    isFileOutput: typeof fileOut === "object" && typeof fileOut.blob === "function",
    url: typeof fileOut === "string" ? fileOut : fileOut.url().toString(),
    bytes: (await bytesOf(fileOut)).toString("base64"),
  };
  const blobInput = new Blob([png], { type: "image/png" });
  const queuedFile = await replicate.predictions.create({ version: cfg.image, input: { image: blobInput } });
  const queuedFileDone = await replicate.wait(queuedFile, { interval: 50 });
  out.queuedFile = {
    input: queuedFileDone.input,
    status: queuedFileDone.status,
    error: queuedFileDone.error,
    output: queuedFileDone.output,
    bytes: queuedFileDone.output ? (await bytesOf(queuedFileDone.output)).toString("base64") : null,
  };

  // replicate.stream: the stream URL (a capability, fetched with no token) through the proxy.
  const events = [];
  for await (const event of replicate.stream(`admin/streaming:${cfg.streaming}`, {
    input: { prompt: "streamed through a proxy" },
  })) {
    events.push({ event: event.event, data: String(event) });
  }
  out.events = events;

  // Trainings: the CSV uploaded through the Files API, trainings.create, then the trained version run.
  const csv = await replicate.files.create(new Blob([cfg.csv], { type: "text/csv" }));
  let training = await replicate.trainings.create("admin", "trainable", cfg.trainable, {
    destination: "admin/topics",
    input: { data: csv.urls.get },
  });
  out.trainingCreated = { status: training.status, urls: training.urls };
  while (!["succeeded", "failed", "canceled"].includes(training.status)) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    training = await replicate.trainings.get(training.id);
  }
  out.training = { status: training.status, output: training.output, error: training.error };
  if (training.status === "succeeded") {
    out.trained = await replicate.run(training.output.version, {
      input: { text: "the striker scored a goal in the stadium" },
    });
  }

  // Deployments: create one, a queued prediction through it, waited; then delete it.
  await replicate.deployments.create({
    name: "through-proxy",
    model: "admin/hello-world",
    version: cfg.hello,
    hardware: "cpu",
    min_instances: 0,
    max_instances: 1,
  });
  const deployed = await replicate.deployments.predictions.create("admin", "through-proxy", {
    input: { text: "deployed" },
  });
  const deployedDone = await replicate.wait(deployed, { interval: 50 });
  out.deployed = { status: deployedDone.status, output: deployedDone.output, deployment: deployedDone.deployment };
  out.deploymentDeleted = await replicate.deployments.delete("admin", "through-proxy");

  out.requests = requests;
  console.log(JSON.stringify(out));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
