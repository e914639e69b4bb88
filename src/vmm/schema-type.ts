// The TypeScript type of a value a JSON schema (written `as const`)
// accepts, for the keywords our schemas use: type (one or a list), enum,
// const, properties with required, items (one schema or a tuple), anyOf,
// oneOf, and allOf's first member (the others only narrow it: if/then).
// With it a schema is the one definition and its type is derived, so the
// two cannot drift apart. Types only: nothing here exists at run time.

type Writable<T> = { -readonly [K in keyof T]: T[K] };
/** Shows an intersection of mapped types as one object type. */
type Flat<T> = { [K in keyof T]: T[K] } & {};

type RequiredOf<S> = S extends { readonly required: readonly (infer R)[] } ? R : never;

type ObjectOf<S> = S extends { readonly properties: infer P }
  ? Flat<
    { -readonly [K in keyof P & RequiredOf<S>]: SchemaType<P[K]> } &
    { -readonly [K in Exclude<keyof P, RequiredOf<S>>]?: SchemaType<P[K]> }
  >
  : Record<string, unknown>;

type ItemsOf<S> = S extends { readonly items: infer I }
  ? I extends readonly unknown[] ? Writable<{ [K in keyof I]: SchemaType<I[K]> }> : SchemaType<I>[]
  : unknown[];

type OfType<S, T> =
  T extends 'string' ? string
  : T extends 'integer' | 'number' ? number
  : T extends 'boolean' ? boolean
  : T extends 'null' ? null
  : T extends 'array' ? ItemsOf<S>
  : T extends 'object' ? ObjectOf<S>
  : never;

export type SchemaType<S> =
  S extends { readonly const: infer C } ? C
  : S extends { readonly enum: readonly (infer E)[] } ? E
  : S extends { readonly anyOf: readonly (infer A)[] } ? SchemaType<A>
  : S extends { readonly oneOf: readonly (infer A)[] } ? SchemaType<A>
  : S extends { readonly allOf: readonly [infer F, ...unknown[]] } ? SchemaType<F>
  : S extends { readonly type: readonly (infer T)[] } ? OfType<S, T>
  : S extends { readonly type: infer T } ? OfType<S, T>
  : unknown;
