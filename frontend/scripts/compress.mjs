// Writes `.br` and `.gz` beside every text asset of dist/, once at build time, so the server
// serves precompressed bytes (control-plane/src/http/panel.rs) and never compresses per request.
import { readdirSync, readFileSync, writeFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { brotliCompressSync, gzipSync, constants } from "node:zlib";

const dist = new URL("../dist/", import.meta.url).pathname;
const text = /\.(js|mjs|css|html|svg|json|txt|map)$/;
let files = 0;
for (const entry of readdirSync(dist, { recursive: true })) {
  const path = join(dist, String(entry));
  if (!text.test(path) || !statSync(path).isFile()) continue;
  const bytes = readFileSync(path);
  if (bytes.length < 512) continue;
  writeFileSync(`${path}.br`, brotliCompressSync(bytes, { params: { [constants.BROTLI_PARAM_QUALITY]: 11 } }));
  writeFileSync(`${path}.gz`, gzipSync(bytes, { level: 9 }));
  files += 1;
}
console.log(`compressed ${files} files (brotli, gzip)`);
