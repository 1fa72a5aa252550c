// The Python interpreter for tests that drive Python clients: the test venv (npm ci makes it,
// with python/requirements-test.txt), else Debian's python3; with python/ and python/gen on the path.
import { existsSync } from "node:fs";
import path from "node:path";

export const PYTHON = existsSync(".venv/bin/python") ? ".venv/bin/python" : "/usr/bin/python3";
export const PYTHON_ENV = { ...process.env, PYTHONPATH: [path.resolve("python"), path.resolve("python/gen")].join(path.delimiter) };
