// Differential test of quern's JSON Schema validator (src/jsonschema.c)
// against ajv 8 (draft 2020-12), the reference implementation.
//
//   node tests/schema/ajv_cases.mjs > tests/unit/jsonschema_ajv_cases.jsonl
//       regenerates the table the unit test tests/unit/test_jsonschema_ajv.c
//       reads: one case a line, {"id", "s" (schema text), "i" (instance
//       text), "ajv" (valid | invalid | refused), "paths" (where ajv found
//       the instance invalid, in quern's "$.a[0]" form), "expect" (quern's
//       verdict: ajv's unless "why" says why quern deliberately differs)}.
//   node tests/schema/ajv_cases.mjs --check tests/unit/jsonschema_ajv_cases.jsonl
//       regenerates in memory and fails when the checked-in table differs,
//       i.e. when ajv's verdicts are not what the table says (make test-unit
//       runs this when node and ajv are installed: scripts/deps.sh installs
//       ajv into tests/openapi/).
//
// Schemas and instances are kept as JSON text so that 1.0, -0, 1e2 and
// integers past 2^53 reach quern's parser as written (ajv sees JavaScript
// doubles).  Cases are generated from a fixed seed: the output is stable.
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "..", "openapi", "package.json"));
const Ajv2020 = require("ajv/dist/2020").default;
const ajv = new Ajv2020({ strict: false, allErrors: true, validateFormats: false, logger: false });

// ---- deliberate deviations (each is written in docs/API.md) ----------------
const BIGINT = "integers beyond 2^53 are compared exactly (ajv rounds them to doubles)";
const ANNEXB = "a brace or ']' that is not syntax is a literal, as in ECMA-262 without the u flag (ajv compiles with u and refuses it)";
const POSIXCLASS = "[[:alpha:]] and the other POSIX classes are accepted in a pattern (ASCII only)";
const REGEXFEAT = "lookaround, backreferences, \\p{...}, \\c, \\0, named groups and lone surrogates are refused (patterns run on POSIX ERE)";
const LENIENT = "duplicate names in type or required and an empty enum are accepted (ajv's meta-schema refuses them)";
const TOPBOOL = "a whole schema must be an object (true and false are allowed as subschemas)";
const NOREF = "$ref is refused: write the subschema inline";
const SUBSET = "keywords outside the subset that constrain instances are refused rather than ignored";

// [schema text, instance text] or, where quern deliberately differs from ajv,
// [schema text, instance text, why, quern's verdict]
const HAND = [
  // type, integer vs 1.0 vs 1e2, huge numbers, -0
  ['{"type":"integer"}', "2"], ['{"type":"integer"}', "2.0"], ['{"type":"integer"}', "1e2"],
  ['{"type":"integer"}', "1.5"], ['{"type":"integer"}', "1e300"], ['{"type":"integer"}', "-0"],
  ['{"type":"integer"}', "-0.0"], ['{"type":"integer"}', "0.1e1"], ['{"type":"integer"}', "1.0000000000000002"],
  ['{"type":"number"}', "9223372036854775807"], ['{"type":"integer"}', "-9223372036854775808"],
  ['{"type":["string","null"]}', "null"], ['{"type":["integer","string"]}', "2.5"],
  ['{"type":["number","integer"]}', "2.5"], ['{"type":"null"}', "false"], ['{"type":"boolean"}', "0"],
  ['{"type":["string","string"]}', '"a"', LENIENT, "valid"], ['{"type":[]}', "1"], ['{"type":"int"}', "1"],
  // numeric bounds
  ['{"minimum":0}', "-0"], ['{"minimum":0}', "-0.0"], ['{"exclusiveMinimum":0}', "-0.0"],
  ['{"exclusiveMinimum":0}', "0"], ['{"exclusiveMinimum":0}', "5e-324"], ['{"exclusiveMaximum":1}', "0.9999999999999999"],
  ['{"exclusiveMaximum":1}', "1.0"], ['{"maximum":1}', "1.0000000000000002"], ['{"maximum":0.1}', "0.1"],
  ['{"maximum":0.30000000000000004}', "0.3"], ['{"minimum":0.30000000000000004}', "0.3"],
  ['{"minimum":1e308}', "1.7976931348623157e308"], ['{"maximum":-1e308}', "-1.7976931348623157e308"],
  ['{"minimum":2,"maximum":1}', "1.5"], ['{"minimum":1.5,"type":"integer"}', "1"], ['{"minimum":1.5,"type":"integer"}', "2.0"],
  ['{"maximum":9007199254740992}', "9007199254740993", BIGINT, "invalid"], ['{"maximum":9223372036854775806}', "9223372036854775807", BIGINT, "invalid"],
  ['{"maximum":9223372036854775807}', "9223372036854775807"], ['{"minimum":-9223372036854775808}', "-9223372036854775808"],
  ['{"maximum":9007199254740993}', "9007199254740992.0"], ['{"minimum":1e19}', "9223372036854775807"],
  ['{"minimum":"x"}', "1"], ['{"minimum":true}', "1"], ['{"exclusiveMinimum":true}', "1"], ['{"maximum":null}', "1"],
  ['{"minimum":5}', '"a"'], ['{"maximum":0}', "[1]"],
  // enum / const: deep equality, 1 vs 1.0, key order
  ['{"const":1}', "1.0"], ['{"const":1.0}', "1"], ['{"const":0}', "-0.0"], ['{"const":1}', "true"], ['{"const":0}', "false"],
  ['{"const":null}', "null"], ['{"const":null}', "0"], ['{"const":"a"}', '"a"'], ['{"const":"é"}', '"e\\u0301"'],
  ['{"const":{"a":[1,2],"b":{}}}', '{"b":{},"a":[1.0,2e0]}'], ['{"const":{"a":1}}', '{"a":1,"b":2}'],
  ['{"const":[1,[2]]}', "[1,[2.0]]"], ['{"const":[1,2]}', "[2,1]"], ['{"const":[]}', "{}"], ['{"const":{}}', "{}"],
  ['{"const":9007199254740993}', "9007199254740992", BIGINT, "invalid"], ['{"const":1e2}', "100"],
  ['{"enum":[{"a":1},[1],"x",null]}', "[1.0]"], ['{"enum":[{"a":1},[1],"x",null]}', '{"a":1.0}'],
  ['{"enum":[{"a":1},[1],"x",null]}', "null"], ['{"enum":[{"a":1},[1],"x",null]}', '"X"'], ['{"enum":[1,2]}', "2.0"],
  ['{"enum":[]}', "1", LENIENT, "invalid"], ['{"enum":1}', "1"], ['{"enum":[1,1]}', "1"], ['{"enum":[true]}', "1"],
  // strings: lengths count code points
  ['{"minLength":2}', '"😀"'], ['{"maxLength":1}', '"😀"'], ['{"maxLength":1}', '"é"'], ['{"maxLength":1}', '"e\\u0301"'],
  ['{"maxLength":1}', '"\\ud83d\\ude00"'], ['{"minLength":3,"maxLength":3}', '"été"'], ['{"maxLength":0}', '""'],
  ['{"minLength":2.0}', '"a"'], ['{"minLength":1.5}', '"a"'], ['{"minLength":-1}', '"a"'], ['{"maxLength":"1"}', '"a"'],
  ['{"minLength":5}', "12345"],
  // pattern: ECMA-262, unanchored, code points
  ['{"pattern":"^\\\\d+$"}', '"123"'], ['{"pattern":"\\\\d"}', '"abc"'], ['{"pattern":"^\\\\d$"}', '"٣"'],
  ['{"pattern":"^.$"}', '"é"'], ['{"pattern":"^.$"}', '"😀"'], ['{"pattern":"^..$"}', '"😀"'], ['{"pattern":"^[é]$"}', '"é"'],
  ['{"pattern":"^[^a]$"}', '"é"'], ['{"pattern":"^[à-ÿ]+$"}', '"éü"'], ['{"pattern":"^\\\\w+$"}', '"héllo"'],
  ['{"pattern":"^\\\\w+$"}', '"A_9"'], ['{"pattern":"^\\\\W$"}', '"é"'], ['{"pattern":"a$"}', '"a\\n"'], ['{"pattern":"^a"}', '"b\\na"'],
  ['{"pattern":"x|^a"}', '"b\\na"'], ['{"pattern":"(^a|b)c"}', '"xac"'], ['{"pattern":"a$|x"}', '"a\\nb"'],
  ['{"pattern":"."}', '"\\n"'], ['{"pattern":"."}', '"\\r"'], ['{"pattern":"."}', '"\\u2028"'], ['{"pattern":"^.*$"}', '"a\\nb"'],
  ['{"pattern":"^[^]+$"}', '"a\\nb"'], ['{"pattern":"^[^x]$"}', '"\\n"'], ['{"pattern":"\\\\s"}', '"\\u00a0"'],
  ['{"pattern":"^\\\\s$"}', '"\\u2028"'], ['{"pattern":"^\\\\s$"}', '"\\u3000"'], ['{"pattern":"^\\\\s$"}', '"\\ufeff"'],
  ['{"pattern":"^\\\\s$"}', '"\\u200b"'], ['{"pattern":"^\\\\s$"}', '"\\u0085"'], ['{"pattern":"^\\\\S$"}', '"\\u202f"'],
  ['{"pattern":"^[\\\\s]$"}', '"\\t"'], ['{"pattern":"\\\\u00e9"}', '"é"'], ['{"pattern":"^\\\\u{1F600}$"}', '"😀"'],
  ['{"pattern":"^\\\\ud83d\\\\ude00$"}', '"😀"'], ['{"pattern":"\\\\x41"}', '"A"'], ['{"pattern":"\\\\x2e"}', '"a"'],
  ['{"pattern":"^[\\\\x2d\\\\]]+$"}', '"-]"'], ['{"pattern":"[\\\\]]"}', '"]"'], ['{"pattern":"[a\\\\-z]"}', '"b"'],
  ['{"pattern":"[a\\\\-z]"}', '"-"'], ['{"pattern":"[\\\\^a]"}', '"^"'], ['{"pattern":"[\\\\[]"}', '"["'],
  ['{"pattern":"[\\\\\\\\]"}', '"\\\\"'], ['{"pattern":"[\\\\d-z]"}', '"-"'], ['{"pattern":"[\\\\b]"}', '"\\b"'],
  ['{"pattern":"[\\\\w.]+"}', '"."'], ['{"pattern":"\\\\bfoo"}', '"a foo"'], ['{"pattern":"\\\\bfoo"}', '"afoo"'],
  ['{"pattern":"a\\\\b"}', '"aé"'], ['{"pattern":"é\\\\B"}', '"éa"'],
  ['{"pattern":"^[\\\\u4e00-\\\\u9fff]+$"}', '"中文"'], ['{"pattern":"^[^\\\\u4e00-\\\\u9fff]+$"}', '"中"'], ['{"pattern":"^\\\\D\\\\W\\\\S$"}', '"ééé"'],
  ['{"pattern":"^é{2}$"}', '"éé"'], ['{"pattern":"^.{3}$"}', '"a😀é"'], ['{"pattern":"^[[:alpha:]]$"}', '"é"', POSIXCLASS, "invalid"], ['{"pattern":"x{2}"}', '"xx"'], ['{"pattern":"^x{2,}$"}', '"x"'],
  ['{"pattern":"^(ab|c)*$"}', '"abcab"'], ['{"pattern":"^(?:ab)+$"}', '"abab"'], ['{"pattern":"^a+?$"}', '"aa"'],
  ['{"pattern":"\\\\S+@\\\\S+"}', '"a@b"'], ['{"pattern":"\\\\/"}', '"/"'], ['{"pattern":"\\\\."}', '"a"'],
  ['{"pattern":"[.]"}', '"a"'], ['{"pattern":"[a-]"}', '"-"'], ['{"pattern":"()"}', '""'], ['{"pattern":""}', '"x"'],
  ['{"pattern":"^$"}', '""'], ['{"pattern":"^a|b$"}', '"xb"'], ['{"pattern":"\\\\t"}', '"\\t"'],
  ['{"pattern":"[^\\\\d\\\\s]"}', '"1 "'], ['{"pattern":"^[\\\\u00e0-\\\\u00ff]$"}', '"é"'],
  ['{"pattern":"^[é-ë]$"}', '"ê"'], ['{"pattern":"^[é-ë]$"}', '"e"'], ['{"pattern":"^[^\\\\u00e0-\\\\u00ff]$"}', '"é"'],
  ['{"pattern":"^[\\\\u0001-\\\\u001f]$"}', '"\\u001b"'], ['{"pattern":"^[\\\\u0000-\\\\u001f]+$"}', '"\\t\\n"'],
  ['{"pattern":"^[a-\\\\u{1F600}]$"}', '"😀"'],
  ['{"pattern":"^[z-a]$"}', '"a"'], ['{"pattern":"^[\\\\--z]+$"}', '"-az"'], ['{"pattern":"^[+--]$"}', '","'],
  ['{"pattern":"^[\\\\]-a]$"}', '"^"'], ['{"pattern":"^[^-]$"}', '"-"'], ['{"pattern":"^[\\\\w-z]$"}', '"-"'],
  ['{"pattern":"a{,5}"}', '"a{,5}"', ANNEXB, "valid"], ['{"pattern":"a]"}', '"a]"', ANNEXB, "valid"], ['{"pattern":"a}"}', '"a}"', ANNEXB, "valid"],
  ['{"pattern":"^{x}$"}', '"{x}"', ANNEXB, "valid"], ['{"pattern":"[[:alpha:]]"}', '"a"', POSIXCLASS, "valid"],
  ['{"pattern":"\\\\p{L}"}', '"é"', REGEXFEAT, "refused"], ['{"pattern":"(?=a)a"}', '"a"', REGEXFEAT, "refused"],
  ['{"pattern":"(?<!a)b"}', '"b"', REGEXFEAT, "refused"], ['{"pattern":"(a)\\\\1"}', '"aa"', REGEXFEAT, "refused"],
  ['{"pattern":"(?<n>a)"}', '"a"', REGEXFEAT, "refused"], ['{"pattern":"\\\\cA"}', '"\\u0001"', REGEXFEAT, "refused"],
  ['{"pattern":"\\\\ud800"}', '"a"', REGEXFEAT, "refused"], ['{"pattern":"[\\\\D]"}', '"a"', REGEXFEAT, "refused"],
  ['{"pattern":"("}', '"a"'], ['{"pattern":"["}', '"a"'], ['{"pattern":"a**"}', '"a"'], ['{"pattern":"a{2,1}"}', '"a"'],
  ['{"pattern":"\\\\"}', '"a"'], ['{"pattern":"\\\\q"}', '"q"'], ['{"pattern":5}', '"a"'], ['{"pattern":"^a"}', "5"],
  // objects
  ['{"additionalProperties":{"type":"string"}}', '{"a":1}'], ['{"additionalProperties":{"type":"string"}}', '{"a":"x"}'],
  ['{"properties":{"a":true},"additionalProperties":false}', '{"a":1,"b":2}'],
  ['{"properties":{"a":true},"additionalProperties":false}', '{"a":1}'],
  ['{"properties":{"a":{"type":"integer"}},"additionalProperties":{"type":"string"}}', '{"a":1,"b":"x"}'],
  ['{"properties":{"a":{"type":"integer"}},"additionalProperties":{"type":"string"}}', '{"a":"x"}'],
  ['{"additionalProperties":false}', "{}"], ['{"additionalProperties":false}', "[1]"],
  ['{"required":["x"]}', "{}"], ['{"required":["x"]}', "[]"], ['{"required":["x"]}', '{"x":null}'],
  ['{"required":["x"],"properties":{"y":{}}}', '{"y":1}'], ['{"required":[]}', "{}"],
  ['{"required":["a","a"]}', '{"a":1}', LENIENT, "valid"], ['{"required":[1]}', "{}"], ['{"required":"a"}', "{}"],
  ['{"properties":{"a b":{"type":"string"}}}', '{"a b":1}'], ['{"properties":{"a":false}}', '{"a":1}'],
  ['{"properties":{"a":false}}', "{}"], ['{"properties":{"":{"type":"string"}}}', '{"":1}'],
  ['{"properties":{"0":{"type":"string"}}}', '{"0":1}'], ['{"properties":{"é":{"type":"string"}}}', '{"é":1}'],
  ['{"properties":{"a\\"b":{"type":"string"}}}', '{"a\\"b":1}'], ['{"properties":{"x":{"required":["y"]}}}', '{"x":{}}'],
  ['{"properties":1}', "{}"], ['{"properties":{"a":1}}', "{}"], ['{"additionalProperties":1}', "{}"],
  // arrays
  ['{"items":{"type":"string"}}', '["a",1]'], ['{"items":{"type":"string"}}', "[]"], ['{"items":false}', "[]"],
  ['{"items":false}', "[1]"], ['{"items":true}', "[1]"], ['{"items":[{"type":"string"}]}', "[1]"],
  ['{"items":{"items":{"minimum":1}}}', "[[1],[0]]"], ['{"minItems":1}', "[]"], ['{"maxItems":0}', "[1]"],
  ['{"minItems":1.0}', "[]"], ['{"maxItems":-1}', "[]"], ['{"items":{"properties":{"n":{"type":"string"}}}}', '[{"n":"x"},{"n":1}]'],
  ['{"items":1}', "[]"], ['{"minItems":1}', '"a"'],
  // combinators, nested
  ['{"oneOf":[{"type":"integer"},{"type":"number"}]}', "1"], ['{"oneOf":[{"type":"integer"},{"type":"number"}]}', "1.5"],
  ['{"oneOf":[{"type":"integer"},{"type":"number"}]}', "1.0"], ['{"oneOf":[{"type":"string"},{"type":"number"}]}', "null"],
  ['{"anyOf":[{"oneOf":[{"minimum":1},{"maximum":5}]},{"const":3}]}', "3"],
  ['{"anyOf":[{"oneOf":[{"minimum":1},{"maximum":5}]},{"const":3}]}', "7"],
  ['{"anyOf":[{"type":"string"},{"properties":{"a":{"type":"integer"}}}]}', '{"a":"x"}'],
  ['{"allOf":[{"type":"string"},{"minLength":1}]}', '""'], ['{"allOf":[true,{"const":1}]}', "1"],
  ['{"anyOf":[false,true]}', "1"], ['{"oneOf":[true,true]}', "1"], ['{"oneOf":[false,{}]}', "1"],
  ['{"anyOf":[]}', "1"], ['{"oneOf":{}}', "1"], ['{"allOf":[1]}', "1"],
  ['{"properties":{"p":{"anyOf":[{"type":"null"},{"items":{"type":"integer"}}]}}}', '{"p":[1,"x"]}'],
  // boolean schemas, $ref, keywords outside the subset, annotations
  ["true", "1", TOPBOOL, "refused"], ["false", "1", TOPBOOL, "refused"], ['{"not":{}}', "1", SUBSET, "refused"],
  ['{"$defs":{"x":{"type":"string"}},"$ref":"#/$defs/x"}', "1", NOREF, "refused"], ['{"$defs":{"x":{"type":"string"}}}', "1"],
  ['{"prefixItems":[{"type":"string"}]}', "[1]", SUBSET, "refused"], ['{"multipleOf":2}', "3", SUBSET, "refused"],
  ['{"uniqueItems":true}', "[1,1]", SUBSET, "refused"], ['{"minProperties":1}', "{}", SUBSET, "refused"], ['{"maxProperties":0}', '{"a":1}', SUBSET, "refused"],
  ['{"contains":{"type":"string"}}', "[1]", SUBSET, "refused"], ['{"propertyNames":{"maxLength":1}}', '{"ab":1}', SUBSET, "refused"],
  ['{"if":{"type":"string"},"then":{"minLength":2}}', '"a"', SUBSET, "refused"], ['{"dependentRequired":{"a":["b"]}}', '{"a":1}', SUBSET, "refused"],
  ['{"patternProperties":{"^x":{"type":"string"}}}', '{"xa":1}', SUBSET, "refused"], ['{"unevaluatedProperties":false}', '{"a":1}', SUBSET, "refused"],
  ['{"format":"email","title":"t","description":"d","default":1,"examples":[],"$comment":"c","deprecated":true}', '"x"'],
  ['{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"string"}', "1"], ['{"x-vendor":{"type":5}}', "1"],
];

// ---- generated cases ----------------------------------------------------------
let seed = 20261124;
function rnd(n) { // xorshift32: the same cases on every machine
  seed ^= seed << 13; seed >>>= 0; seed ^= seed >>> 17; seed ^= seed << 5; seed >>>= 0;
  return seed % n;
}
const pick = (a) => a[rnd(a.length)];
const KEYS = ["a", "b", "c d", "n", "é"];
const STRS = ["", "a", "ab", "abc", "é", "😀x", "a b", "12", "A1_", "x\ny", "été", "\u00a0"];
const NUMS = ["0", "1", "-1", "2.5", "1.0", "-0.0", "100", "3", "1e2", "0.1", "-7.5", "2.0"];
const PATTERNS = ["^a", "b$", "^[a-z]+$", "\\d", "^\\w*$", "^.{2}$", "é", "^[^a]+$", "a|b", "^(ab)*$", "\\s",
  "^$", "[0-9]{2,}", "^\\S+$", "x?y", "\\.", "^.+$", "^[^\\d]*$", "😀"];
const TYPES = ["null", "boolean", "object", "array", "number", "string", "integer"];

// A value as JSON text, with numbers spelled as given (1.0 stays a real).
function genValue(d) {
  switch (rnd(d > 1 ? 5 : 7)) {
  case 0: return pick(["null", "true", "false"]);
  case 1: case 2: return pick(NUMS);
  case 3: case 4: return JSON.stringify(pick(STRS));
  case 5: { const n = rnd(4); const a = []; for (let i = 0; i < n; i++) a.push(genValue(d + 1)); return "[" + a.join(",") + "]"; }
  default: { const n = rnd(4); const o = new Map(); for (let i = 0; i < n; i++) o.set(pick(KEYS), genValue(d + 1));
    return "{" + [...o].map(([k, v]) => JSON.stringify(k) + ":" + v).join(",") + "}"; }
  }
}

// A schema within the subset, as JSON text.
function genSchema(d) {
  const kw = [];
  const add = (k, v) => kw.push(JSON.stringify(k) + ":" + v);
  const r = rnd(d > 2 ? 6 : 9);
  if (d > 0 && rnd(12) === 0) return pick(["true", "false"]);
  if (rnd(3) === 0) {
    if (rnd(3) === 0) add("type", JSON.stringify([pick(TYPES), pick(TYPES)].filter((t, i, a) => a.indexOf(t) === i)));
    else add("type", JSON.stringify(pick(TYPES)));
  }
  switch (r) {
  case 0: if (rnd(2)) add("minLength", String(rnd(3))); if (rnd(2)) add("maxLength", String(rnd(4)));
    if (rnd(2)) add("pattern", JSON.stringify(pick(PATTERNS))); break;
  case 1: for (const k of ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"]) if (rnd(3) === 0) add(k, pick(NUMS)); break;
  case 2: { const a = []; for (let i = 0, n = 1 + rnd(3); i < n; i++) a.push(genValue(1)); add("enum", "[" + a.join(",") + "]"); break; }
  case 3: add("const", genValue(1)); break;
  case 4: if (rnd(2)) add("minItems", String(rnd(3))); if (rnd(2)) add("maxItems", String(rnd(3)));
    if (rnd(3)) add("items", genSchema(d + 1)); break;
  case 5: add("pattern", JSON.stringify(pick(PATTERNS))); break;
  default: {
    if (r === 8 && d < 3) {
      const subs = []; for (let i = 0, n = 1 + rnd(3); i < n; i++) subs.push(genSchema(d + 1));
      add(pick(["anyOf", "oneOf", "allOf"]), "[" + subs.join(",") + "]"); break;
    }
    const props = [];
    for (const k of KEYS) if (rnd(3) === 0) props.push(JSON.stringify(k) + ":" + genSchema(d + 1));
    if (props.length || rnd(2)) add("properties", "{" + props.join(",") + "}");
    if (rnd(2)) add("required", JSON.stringify(KEYS.filter(() => rnd(4) === 0)));
    if (rnd(3) === 0) add("additionalProperties", rnd(2) ? pick(["true", "false"]) : genSchema(d + 1));
  }
  }
  return "{" + kw.join(",") + "}";
}

// ---- running ajv -----------------------------------------------------------------
const isIdent = (k) => /^[A-Za-z_$][A-Za-z0-9_$]*$/.test(k);
function quernKey(k) {
  if (isIdent(k)) return "." + k;
  let s = '["';
  for (const ch of k) {
    const c = ch.codePointAt(0);
    s += ch === '"' || ch === "\\" ? "\\" + ch : c < 0x20 ? "\\u" + c.toString(16).padStart(4, "0") : ch;
  }
  return s + '"]';
}
// ajv's instancePath (a JSON pointer) plus a child key, in quern's "$.a[0]" form.
function quernPath(inst, pointer, child) {
  let out = "$", v = inst;
  const segs = pointer === "" ? [] : pointer.slice(1).split("/").map((s) => s.replace(/~1/g, "/").replace(/~0/g, "~"));
  if (child !== undefined) segs.push(child);
  for (const s of segs) {
    if (Array.isArray(v)) { out += "[" + s + "]"; v = v[Number(s)]; }
    else { out += quernKey(s); v = v && typeof v === "object" ? v[s] : undefined; }
  }
  return out;
}

function runAjv(stext, itext) {
  let validate;
  try {
    validate = ajv.compile(JSON.parse(stext));
  } catch (e) {
    return { ajv: "refused", paths: [] };
  }
  const inst = JSON.parse(itext);
  if (validate(inst)) return { ajv: "valid", paths: [] };
  const paths = new Set();
  for (const e of validate.errors) {
    const child = e.params.missingProperty ?? e.params.additionalProperty;
    paths.add(quernPath(inst, e.instancePath, child));
  }
  return { ajv: "invalid", paths: [...paths].sort() };
}

function table() {
  const lines = [];
  const push = (id, s, i, why, expect) => {
    const r = runAjv(s, i);
    const c = { id, s, i, ajv: r.ajv, paths: r.paths, expect: expect ?? r.ajv };
    if (why) c.why = why;
    lines.push(JSON.stringify(c));
  };
  HAND.forEach(([s, i, why, expect], n) => push("h" + n, s, i, why, expect));
  for (let n = 0; n < 400; n++) {
    const s = genSchema(0);
    for (let k = 0; k < 3; k++) push("g" + n + "." + k, s, genValue(0));
  }
  return lines.join("\n") + "\n";
}

const out = table();
if (process.argv[2] === "--check") {
  const file = process.argv[3];
  if (readFileSync(file, "utf8") !== out) {
    console.error(`${file} is not what ajv says now: regenerate it with\n` +
                  `  node tests/schema/ajv_cases.mjs > ${file}\nand review the diff`);
    process.exit(1);
  }
  console.log(`ajv agrees with ${file} (${out.split("\n").length - 1} cases)`);
} else {
  process.stdout.write(out);
}
