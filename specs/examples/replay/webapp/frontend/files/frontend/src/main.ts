import { start } from "./App";

start(document.getElementById("root") as Element, window);
