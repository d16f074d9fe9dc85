/** The result of a split: the document without its services, and each service's text and place. */
export interface JsonServicesSplit {
  /** The document with `"services": []`. */
  readonly skeleton: string;
  /** Each element's text, as written. */
  readonly services: string[];
  /** Where each element starts and ends (exclusive) in the text. */
  readonly starts: number[];
  readonly ends: number[];
  /** The positions of the array's `[` and just after its `]`. */
  readonly arrayStart: number;
  readonly arrayEnd: number;
}

/**
 * Finds the text of each element of the top-level `services` array in a JSON document without parsing it,
 * so a re-parse of a large generated catalog can skip unchanged services by comparing their text.
 * Returns null when the document is not a plain object with exactly one `services` array (the caller then
 * parses the whole document normally, which also produces the proper error messages).
 */
export function splitJsonServices(text: string): JsonServicesSplit | null {
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
  let found: { start: number; end: number; services: string[]; starts: number[]; ends: number[] } | null =
    null;
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
      const starts: number[] = [];
      const ends: number[] = [];
      i++;
      skipSpace();
      if (text.charCodeAt(i) === 0x5d) i++;
      else {
        for (;;) {
          skipSpace();
          const elementStart = i;
          if (!skipValue()) return null;
          services.push(text.slice(elementStart, i));
          starts.push(elementStart);
          ends.push(i);
          skipSpace();
          const c = text.charCodeAt(i);
          i++;
          if (c === 0x5d) break;
          if (c !== 0x2c) return null;
        }
      }
      found = { start, end: i, services, starts, ends };
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
  return {
    skeleton: `${text.slice(0, found.start)}[]${text.slice(found.end)}`,
    services: found.services,
    starts: found.starts,
    ends: found.ends,
    arrayStart: found.start,
    arrayEnd: found.end,
  };
}

/** Length of the common prefix of a and b (compares large chunks natively, then narrows down). */
export function commonPrefix(a: string, b: string, limit = Math.min(a.length, b.length)): number {
  let i = 0;
  let step = 65_536;
  while (i < limit) {
    const m = Math.min(step, limit - i);
    if (a.slice(i, i + m) === b.slice(i, i + m)) i += m;
    else if (m > 16) step = m >> 1;
    else {
      while (i < limit && a.charCodeAt(i) === b.charCodeAt(i)) i++;
      return i;
    }
  }
  return i;
}

/** Length of the common suffix of a and b, at most `limit`. */
export function commonSuffix(a: string, b: string, limit = Math.min(a.length, b.length)): number {
  let i = 0;
  let step = 65_536;
  const la = a.length;
  const lb = b.length;
  while (i < limit) {
    const m = Math.min(step, limit - i);
    if (a.slice(la - i - m, la - i) === b.slice(lb - i - m, lb - i)) i += m;
    else if (m > 16) step = m >> 1;
    else {
      while (i < limit && a.charCodeAt(la - 1 - i) === b.charCodeAt(lb - 1 - i)) i++;
      return i;
    }
  }
  return i;
}

/**
 * splitJsonServices(text) computed from the split of an earlier text of the same document: the services
 * before and after the edited part keep their text (the very same strings), only the edited part is
 * scanned. Falls back to a full split when the edit touches anything outside the services array. The
 * result is the same as splitJsonServices(text) (null when that would be null).
 */
export function resplitJsonServices(
  prevText: string,
  prev: JsonServicesSplit,
  text: string,
): JsonServicesSplit | null {
  if (text === prevText) return prev;
  const p = commonPrefix(prevText, text);
  const s = commonSuffix(prevText, text, Math.min(prevText.length, text.length) - p);
  const oldTail = prevText.length - s; // [oldTail, end) of the old text is unchanged
  // The edit must be inside the array's brackets (the brackets themselves unchanged).
  if (p <= prev.arrayStart || oldTail >= prev.arrayEnd - 1) return splitJsonServices(text);
  const n = prev.services.length;
  // Services [0, a) end inside the common prefix; services [b, n) start inside the common suffix.
  let a = 0;
  while (a < n && prev.ends[a]! <= p) a++;
  let b = n;
  while (b > a && prev.starts[b - 1]! >= oldTail) b--;
  const delta = text.length - prevText.length;
  const from = a > 0 ? prev.ends[a - 1]! : prev.arrayStart + 1;
  const to = (b < n ? prev.starts[b]! : prev.arrayEnd - 1) + delta;
  if (to < from) return splitJsonServices(text);
  // The edited region, between the kept neighbours (stood in for by nulls), as a document of its own.
  const head = `{"services":[${a > 0 ? 'null' : ''}`;
  const mid = splitJsonServices(`${head}${text.slice(from, to)}${b < n ? 'null' : ''}]}`);
  const first = a > 0 ? 1 : 0;
  const last = (mid?.services.length ?? 0) - (b < n ? 1 : 0);
  if (
    mid === null ||
    last < first ||
    (a > 0 && mid.services[0] !== 'null') ||
    (b < n && mid.services[last] !== 'null')
  )
    return splitJsonServices(text); // not an edit between elements: let a full split decide
  const services = prev.services.slice(0, a);
  const starts = prev.starts.slice(0, a);
  const ends = prev.ends.slice(0, a);
  const shift = from - head.length;
  for (let k = first; k < last; k++) {
    services.push(mid.services[k]!);
    starts.push(mid.starts[k]! + shift);
    ends.push(mid.ends[k]! + shift);
  }
  for (let k = b; k < n; k++) {
    services.push(prev.services[k]!);
    starts.push(prev.starts[k]! + delta);
    ends.push(prev.ends[k]! + delta);
  }
  const arrayEnd = prev.arrayEnd + delta;
  return {
    skeleton: `${text.slice(0, prev.arrayStart)}[]${text.slice(arrayEnd)}`,
    services,
    starts,
    ends,
    arrayStart: prev.arrayStart,
    arrayEnd,
  };
}
