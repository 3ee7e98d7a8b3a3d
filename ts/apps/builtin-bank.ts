// The built-in `bank` as an app module (`--app bank`), like any user's app.
import { builtinApps } from './index.js';

export default builtinApps.bank;
