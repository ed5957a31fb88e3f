// Helpers of the tests: search a view tree, record fetch calls, a DOM just big enough to render.

export function findAll(node, test) {
  if (!node || typeof node !== "object") return [];
  return [...(test(node) ? [node] : []), ...node.children.flatMap((child) => findAll(child, test))];
}

export const find = (node, test) => findAll(node, test)[0];

export function text(node) {
  if (!node) return "";
  return typeof node === "object" ? node.children.map(text).join("") : String(node);
}

// A fetch that answers from `answers` ({ "METHOD /path": [status, body] }) and records calls.
export function fakeFetch(answers) {
  const calls = [];
  const fetch = async (url, init) => {
    const key = `${init.method} ${url}`;
    calls.push({ key, body: init.body === undefined ? undefined : JSON.parse(init.body), init });
    const [status, body] = answers[key] || [404, { error: { code: "not_found", message: key, details: [] } }];
    return { ok: status < 400, status, text: async () => (body === null ? "" : JSON.stringify(body)) };
  };
  return { fetch, calls };
}

// A context for a page: `updates` collects what the page asks to change.
export function fakeContext(api, params = {}) {
  const ctx = { api, params, updates: [], paths: [] };
  ctx.update = (patch) => ctx.updates.push(patch);
  ctx.navigate = (path) => ctx.paths.push(path);
  ctx.state = () => Object.assign({}, ...ctx.updates);
  return ctx;
}

export const submitEvent = (fields) => ({
  preventDefault() {},
  currentTarget: { elements: Object.entries(fields).map(([name, value]) => ({ name, value })), reset() {} },
});

export function fakeWindow(hash) {
  const node = (tag) => ({
    tag, attributes: {}, children: [], listeners: {},
    setAttribute(name, value) { this.attributes[name] = value; },
    addEventListener(type, listener) { this.listeners[type] = listener; },
    appendChild(child) { this.children.push(child); return child; },
    replaceChildren(...children) { this.children = children; },
  });
  const listeners = {};
  return {
    location: { hash },
    document: { createElement: node, createTextNode: (data) => ({ data, children: [] }) },
    addEventListener: (type, listener) => { listeners[type] = listener; },
    dispatch: (type) => listeners[type](),
    root: node("div"),
  };
}
