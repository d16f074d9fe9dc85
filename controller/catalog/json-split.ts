/**
 * Finds the text of each element of the top-level `services` array in a JSON document without parsing it,
 * so a re-parse of a large generated catalog can skip unchanged services by comparing their text.
 * Returns null when the document is not a plain object with exactly one `services` array (the caller then
 * parses the whole document normally, which also produces the proper error messages).
 */
export function splitJsonServices(text: string): { skeleton: string; services: string[] } | null {
  const n = text.length;
  let i = 0;
  const skipSpace = () => {
    while (i < n) {
      const c = text.charCodeAt(i);
      if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) i++;
      else break;
    }
  };
  /** Moves past a string starting at i (a '"'); false if unterminated. */
  const skipString = (): boolean => {
    i++;
    while (i < n) {
      const c = text.charCodeAt(i);
      if (c === 0x5c) i += 2;
      else if (c === 0x22) {
        i++;
        return true;
      } else i++;
    }
    return false;
  };
  /** Moves past any value starting at i; false on malformed input. */
  const skipValue = (): boolean => {
    const c = text.charCodeAt(i);
    if (c === 0x22) return skipString();
    if (c === 0x7b || c === 0x5b) {
      let depth = 0;
      while (i < n) {
        const d = text.charCodeAt(i);
        if (d === 0x22) {
          if (!skipString()) return false;
          continue;
        }
        if (d === 0x7b || d === 0x5b) depth++;
        else if (d === 0x7d || d === 0x5d) {
          depth--;
          if (depth === 0) {
            i++;
            return true;
          }
        }
        i++;
      }
      return false;
    }
    // number, true, false, null
    const start = i;
    while (i < n && !',}] \n\r\t'.includes(text[i]!)) i++;
    return i > start;
  };

  skipSpace();
  if (text.charCodeAt(i) !== 0x7b) return null;
  i++;
  let found: { start: number; end: number; services: string[] } | null = null;
  for (;;) {
    skipSpace();
    if (text.charCodeAt(i) === 0x7d) break;
    if (text.charCodeAt(i) !== 0x22) return null;
    const keyStart = i;
    if (!skipString()) return null;
    const key = text.slice(keyStart, i);
    skipSpace();
    if (text.charCodeAt(i) !== 0x3a) return null;
    i++;
    skipSpace();
    if (key === '"services"') {
      if (found !== null || text.charCodeAt(i) !== 0x5b) return null;
      const start = i;
      const services: string[] = [];
      i++;
      skipSpace();
      if (text.charCodeAt(i) === 0x5d) i++;
      else {
        for (;;) {
          skipSpace();
          const elementStart = i;
          if (!skipValue()) return null;
          services.push(text.slice(elementStart, i));
          skipSpace();
          const c = text.charCodeAt(i);
          i++;
          if (c === 0x5d) break;
          if (c !== 0x2c) return null;
        }
      }
      found = { start, end: i, services };
    } else if (!skipValue()) return null;
    skipSpace();
    const c = text.charCodeAt(i);
    if (c === 0x2c) {
      i++;
      continue;
    }
    if (c === 0x7d) break;
    return null;
  }
  i++;
  skipSpace();
  if (i !== n || found === null) return null;
  return { skeleton: `${text.slice(0, found.start)}[]${text.slice(found.end)}`, services: found.services };
}
