// Validates real responses against an OpenAPI document's response schemas
// with ajv (draft 2020-12, the dialect of OpenAPI 3.1).  argv[2]: the
// document; argv[3]: a JSON array of {method, path (a document path such as
// /api/projects/{project_id}/tasks), status, body}.  Prints one line per
// mismatch ("METHOD PATH STATUS: ajv's errors", or "... no schema" when the
// document describes no JSON answer for that status, an error status falling
// back to the operation's "default") and exits 1 if any.
import Ajv2020 from "ajv/dist/2020.js";
import { readFileSync } from "node:fs";

const doc = JSON.parse(readFileSync(process.argv[2], "utf8"));
const cases = JSON.parse(readFileSync(process.argv[3], "utf8"));
const ajv = new Ajv2020({ strict: false, allErrors: true, validateFormats: false });
ajv.addSchema({ $id: "doc", components: doc.components });
let bad = 0;
for (const c of cases) {
  const op = (doc.paths[c.path] || {})[c.method.toLowerCase()];
  // an error status the operation does not list answers its "default"
  const resp = op && op.responses &&
    (op.responses[String(c.status)] || (c.status >= 400 ? op.responses.default : undefined));
  const schema = resp && resp.content && resp.content["application/json"] &&
    resp.content["application/json"].schema;
  if (!schema && !(!op && c.status === 405)) {
    console.log(`${c.method} ${c.path} ${c.status}: no schema`);
    bad++;
    continue;
  }
  // a method the path does not take (405) has no operation: the Error schema
  const sch = schema || (!op && c.status === 405 ? { $ref: "#/components/schemas/Error" } : null);
  const s = JSON.parse(JSON.stringify(sch).replaceAll('"#/components/', '"doc#/components/'));
  const v = ajv.compile(s);
  if (!v(c.body)) {
    console.log(`${c.method} ${c.path} ${c.status}: ` +
      v.errors.map((e) => `${e.instancePath || "/"} ${e.message}`).join("; "));
    bad++;
  }
}
process.exit(bad ? 1 : 0);
