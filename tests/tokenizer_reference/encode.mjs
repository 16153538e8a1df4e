// Reference encoder for tests/tokenizer_real_files_test.cc and bench/tokenizer_bench.sh: HF tokenizers (the Rust
// library through its npm binding, `tokenizers`), installed by `npm ci` from package.json/package-lock.json here
// into a cache folder.
//   node encode.mjs MODULES_DIR encode REQUEST.json   -> one JSON line per text:
//        {"ids": [...], "ids_special": [...], "decoded": "..."}
//      REQUEST.json: {"tokenizer": "path/tokenizer.json", "texts": ["...", ...]}
//      ids: encode(text) without special tokens; ids_special: with them (the post-processor's template);
//      decoded: decode(ids, skip_special_tokens = false).
//   node encode.mjs MODULES_DIR bench TOKENIZER.json TEXT_FILE REPEATS
//      -> "tokens=N min_ms=X median_ms=Y": the fastest and median time of one encode(text) after one untimed one.
import { createRequire } from 'node:module';
import { readFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';

const [modulesDir, mode, ...args] = process.argv.slice(2);
const require = createRequire(join(modulesDir, 'package.json'));

function out(line) {
  const s = line + '\n';
  let off = 0;
  const buf = Buffer.from(s, 'utf8');
  while (off < buf.length) off += writeSync(1, buf, off);
}

if (mode === 'encode') {
  const { Tokenizer } = require('tokenizers');
  const req = JSON.parse(readFileSync(args[0], 'utf8'));
  const tok = Tokenizer.fromFile(req.tokenizer);
  for (const text of req.texts) {
    const plain = await tok.encode(text, null, { addSpecialTokens: false });
    const special = await tok.encode(text, null, { addSpecialTokens: true });
    const ids = plain.getIds();
    const decoded = await tok.decode(ids, false);
    out(JSON.stringify({ ids, ids_special: special.getIds(), decoded }));
  }
} else if (mode === 'bench') {
  const { Tokenizer } = require('tokenizers');
  const tok = Tokenizer.fromFile(args[0]);
  const text = readFileSync(args[1], 'utf8');
  const repeats = Number(args[2] || 5);
  let tokens = (await tok.encode(text, null, { addSpecialTokens: false })).getLength();
  const seconds = [];
  for (let i = 0; i < repeats; ++i) {
    const t0 = process.hrtime.bigint();
    const e = await tok.encode(text, null, { addSpecialTokens: false });
    seconds.push(Number(process.hrtime.bigint() - t0) / 1e9);
    tokens = e.getLength();
  }
  seconds.sort((a, b) => a - b);
  const ms = (s) => (s * 1000).toFixed(2);
  out(`tokens=${tokens} min_ms=${ms(seconds[0])} median_ms=${ms(seconds[Math.floor(seconds.length / 2)])}`);
} else {
  console.error(`unknown mode '${mode}'`);
  process.exit(2);
}
