/**
 * Registers every entry type Ferry knows. Import this before reading an
 * image: an entry type nobody registered is refused as unknown.
 */
import './memory.js';
import './thread.js';
import './process.js';
import './signals.js';
import './files.js';
import './creds.js';
import './timers.js';
import './unix.js';
import './container.js';
import './tcp.js';
