// Validates an OpenAPI document (path in argv[2]) with swagger-parser:
// exits 0 and prints "valid" when it is valid OpenAPI 3.1, else prints why.
import SwaggerParser from "@apidevtools/swagger-parser";
import { readFileSync } from "node:fs";
const doc = JSON.parse(readFileSync(process.argv[2], "utf8"));
try {
  const api = await SwaggerParser.validate(doc);
  console.log("valid", api.openapi, Object.keys(api.paths).length, "paths");
} catch (e) {
  console.log("invalid:", e.message);
  process.exit(1);
}
