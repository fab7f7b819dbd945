/**
 * The image layer: the container format and the entry types of all
 * resources. Import entry definitions from here so that every resource's
 * entry is registered before an image is read.
 *
 * Resource modules (src/image/<resource>.ts) are added below, one line each.
 */
export * from './constants.js';
export * from './errors.js';
export * from './record.js';
export * from './entry.js';
export * from './pages.js';
export * from './format.js';
