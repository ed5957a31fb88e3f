// A minimal view layer: pages return trees of VNodes, render() turns them into DOM nodes.
export type Child = VNode | string | number | null | undefined | false;
export type Children = Child | Child[];
export type Props = Record<string, any>; // attributes, and on<event> handlers

export interface VNode { tag: string; props: Props; children: Child[] }

export function h(tag: string, props: Props | null, ...children: Children[]): VNode {
  return { tag, props: props || {}, children: children.flat() };
}

export function render(node: Child, doc: Document): Node {
  if (node === null || node === undefined || node === false) return doc.createTextNode("");
  if (typeof node !== "object") return doc.createTextNode(String(node));
  const element = doc.createElement(node.tag);
  for (const [name, value] of Object.entries(node.props)) {
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (value === true) element.setAttribute(name, "");
    else if (value !== false && value !== undefined) element.setAttribute(name, String(value));
  }
  for (const child of node.children) element.appendChild(render(child, doc));
  return element;
}

export interface Field { name: string; value: string }
export interface FormLike { elements: ArrayLike<Field> } // a form element, or a test's stand-in

// The named fields of a submitted form, as { name: value }.
export function formValues(form: FormLike): Record<string, string> {
  const values: Record<string, string> = {};
  for (const field of Array.from(form.elements)) if (field.name) values[field.name] = field.value;
  return values;
}
