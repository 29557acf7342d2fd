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
 * Annotations and unknown keywords (title, description, default, format,
 * $schema, $defs, x-..., ...) are ignored.  jsonschema_check refuses "$ref"
 * and "$dynamicRef", and the 2020-12 keywords that constrain instances but
 * are not implemented (prefixItems, uniqueItems, multipleOf, not, if/then/
 * else, patternProperties, propertyNames, min/maxProperties, contains,
 * dependent*, unevaluated*), rather than silently accepting everything where
 * they stand; jsonschema_validate ignores them (schemas stored before keep
 * their behaviour).
 *
 * pattern is ECMA-262 (the u flag) as far as POSIX ERE can express it: it is
 * translated, compiled with glibc regcomp (REG_EXTENDED) in the C locale and
 * matched byte-wise, unanchored as JSON Schema requires; the translation
 * makes each atom match one whole UTF-8 code point (a non-ASCII character is
 * the group of its bytes; '.', negated classes, \D \W \s \S and classes
 * with non-ASCII members are alternations of byte sequences).  '.' excludes
 * the line terminators, '^' and '$' anchor at the string's ends only, \d \w
 * \b are ASCII, \s \S are ECMA's Unicode set; \xHH \uHHHH \u{H...},
 * (?:...), \t \n \r \f \v, [\b], [^] and escaped punctuation (inside [...]
 * too) are translated.  Backreferences, lookaround, named groups, \p{...},
 * \c, \0, lone surrogates and a class escape as a range end are refused.
 * Unlike ECMA's u mode, a brace or ']' that is not syntax is a literal and
 * [:alpha:]-style classes (ASCII) are accepted.
 * Lazy quantifiers are read as greedy (the same strings match), a quantifier
 * after a quantifier is refused (as in ECMA-262), and so is a pattern whose
 * repetitions would make regcomp's automaton huge: a bound over 1000, or
 * more than 4000 states with nesting multiplying (see pattern_cost in
 * jsonschema.c).  The search is compiled as "^.*(P)": the same strings
 * match, in one scan of the string (regexec's own unanchored search
 * restarts at every position).
 *
 * Numbers are compared exactly: integers past 2^53 are not rounded to
 * doubles (9007199254740993 > 9007199254740992).
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
 * "properties.age.minimum: must be a number", or -ENOTSUP when the schema is
 * well-formed but uses a keyword outside the subset (prefixItems, not, ...;
 * *msg names the first), which jsonschema_validate would ignore. */
int jsonschema_check(const json_t *schema, char **msg);

/* Validates instance against schema.  Returns 0 when valid; otherwise -EINVAL
 * with *path (e.g. "$.items[2].name"; keys that are not identifiers are
 * written $["a b"]) and *msg (e.g. "expected integer, got string") describing
 * the first failure, both malloc'd for the caller to free.  A schema that
 * jsonschema_check would refuse fails with a message starting "invalid
 * schema". */
int jsonschema_validate(const json_t *schema, const json_t *instance, char **path, char **msg);

#endif
