/**
 * Where the code runs, for the modules that work both in Node and in a browser (the cpu and
 * webgpu backends). Imports nothing from Node itself, so a browser bundle can include it.
 */

export function isNode(): boolean {
  return typeof process !== 'undefined' && Boolean(process.versions?.node);
}

/**
 * A module (a Node built-in, or a Node-only package) imported only when called, through a
 * non-literal specifier that bundlers do not follow: a browser bundle never loads it.
 */
export function importLazily<T>(name: string): Promise<T> {
  return import(name) as Promise<T>;
}
