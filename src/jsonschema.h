/*
 * jsonschema — validation of jansson values against the JSON Schema (draft
 * 2020-12) subset quern accepts for definitions' input_schema/output_schema
 * and tasks' output_schema:
 *
 *   type (a name or an array of names; "integer" is any number without a
 *   fractional part, so 2.0 counts), enum, const, minimum, maximum,
 *   exclusiveMinimum, exclusiveMaximum (numbers, as in 2020-12), minLength,
 *   maxLength (counted in Unicode code points), pattern, properties,
 *   required, additionalProperties (boolean or schema), items (one schema),
 *   minItems, maxItems, allOf, anyOf, oneOf, and the boolean schemas
 *   true/false wherever a subschema may appear.
 *
 * Other keywords (title, description, default, format, $schema, ...) are
 * ignored, except "$ref" and "$dynamicRef", which jsonschema_check refuses
 * rather than silently accepting everything where they stand.
 *
 * pattern is NOT ECMA-262: it is compiled as a POSIX extended regular
 * expression (glibc regcomp, REG_EXTENDED), searched unanchored as JSON
 * Schema requires, and matched byte-wise.  Before compiling, the common
 * ECMA-262 spellings are translated: \d \w \s (and \D \W \S outside
 * brackets), (?:...), \t \n \r \f \v and escaped punctuation.  Backreferences,
 * lookaround, \uXXXX and other escapes are refused by jsonschema_check.
 * Lazy quantifiers are read as greedy (the same strings match), a brace that
 * is not a quantifier is a literal, a quantifier after a quantifier is
 * refused (as in ECMA-262), and so is a pattern whose repetitions would make
 * regcomp's automaton huge: a bound over 1000, or more than 4000 states with
 * nesting multiplying (see pattern_cost in jsonschema.c).  The search is
 * compiled as "^.*(P)": the same strings match, in one scan of the string
 * (regexec's own unanchored search restarts at every position).
 *
 * Nesting deeper than JSONSCHEMA_MAX_DEPTH subschemas is an error, one
 * validation does at most JSONSCHEMA_MAX_STEPS units of work (about one per
 * instance value per applicable subschema), and one check visits at most
 * JSONSCHEMA_MAX_NODES subschemas, so a hostile schema (deep, or anyOf
 * nested to blow up exponentially) fails cleanly instead of exhausting the
 * stack or the CPU.
 *
 * Stateless: any thread may call these on values it does not mutate meanwhile.
 */
#ifndef QUERN_JSONSCHEMA_H
#define QUERN_JSONSCHEMA_H

#include <jansson.h>

#define JSONSCHEMA_MAX_DEPTH 64
#define JSONSCHEMA_MAX_STEPS 10000000L /* per validation */
#define JSONSCHEMA_MAX_NODES 1000000L  /* subschemas per check */
#define JSONSCHEMA_MAX_PATTERN 4096

/* Checks that schema is one this validator understands: an object whose
 * keywords have values of the right types, whose patterns compile and whose
 * nesting is within bounds.  Returns 0, or -EINVAL with *msg (malloc'd, the
 * caller frees) starting with the offending keyword's path, e.g.
 * "properties.age.minimum: must be a number". */
int jsonschema_check(const json_t *schema, char **msg);

/* Validates instance against schema.  Returns 0 when valid; otherwise -EINVAL
 * with *path (e.g. "$.items[2].name"; keys that are not identifiers are
 * written $["a b"]) and *msg (e.g. "expected integer, got string") describing
 * the first failure, both malloc'd for the caller to free.  A schema that
 * jsonschema_check would refuse fails with a message starting "invalid
 * schema". */
int jsonschema_validate(const json_t *schema, const json_t *instance, char **path, char **msg);

#endif
