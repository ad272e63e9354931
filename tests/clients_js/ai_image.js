// The Vercel AI SDK (`ai` + `@ai-sdk/replicate`, one major per install) generating an image through cogport
// (tests/test_clients_js_ai.py): createReplicate({ baseURL, apiToken }) as its docs show, then
// generateImage (experimental_generateImage before ai 6) by model name and by owner/name:version.
// argv[2]: JSON {baseURL, apiToken, version, png (base64 of the input image, sent as a data: URL)}.
const ai = require("ai");
const { createReplicate } = require("@ai-sdk/replicate");

const cfg = JSON.parse(process.argv[2]);
const generateImage = ai.generateImage || ai.experimental_generateImage;
const requests = [];
const replicate = createReplicate({
  baseURL: cfg.baseURL,
  apiToken: cfg.apiToken,
  fetch: (url, init = {}) => {
    const headers = new Headers(init.headers || {});
    requests.push({
      method: init.method || "GET",
      url: String(url),
      prefer: headers.get("prefer"),
      authorization: headers.get("authorization"),
      body: typeof init.body === "string" ? JSON.parse(init.body) : null,
    });
    return fetch(url, init);
  },
});

async function generate(modelId) {
  const { image } = await generateImage({
    model: replicate.image(modelId),
    prompt: "grayscale it",
    providerOptions: { replicate: { image: `data:image/png;base64,${cfg.png}`, width: 2 } },
  });
  return { base64: image.base64, mediaType: image.mediaType };
}

async function main() {
  const out = {
    generateImage: ai.generateImage ? "generateImage" : "experimental_generateImage",
    byModel: await generate("admin/image"),
    byVersion: await generate(`admin/image:${cfg.version}`),
  };
  out.requests = requests;
  console.log(JSON.stringify(out));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
