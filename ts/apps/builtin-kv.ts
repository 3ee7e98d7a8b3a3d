// The built-in `kv` as an app module (`--app kv`), like any user's app.
import { builtinApps } from './index.js';

export default builtinApps.kv;
