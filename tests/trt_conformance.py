"""TensorRT API conformance: every ``tensorrt`` attribute the code uses, under the version branch that uses it,
checked against the names the real Python bindings of each TensorRT version define.

The code side is an AST walk over the package and ``benchmarks/`` (every module that imports ``tensorrt`` or
calls a function returning it, e.g. ``tensorrt_runtime.tensorrt()``). A value is a TensorRT value when it comes
from the module, from an attribute or a call of a TensorRT value (``builder.create_network(...)``), or from
such a value passed into a function or stored on ``self``; lists built from TensorRT values carry it to their
loop variables. Every attribute read or written on a TensorRT value, and every keyword argument of a call of
one, is a *use*. A use is guarded by the conditions of the ``if`` statements around it (and by an earlier
``if ...: return``), and a function by the conditions at its call sites: the code's two version switches are
understood, ``major_version(trt)`` compared with a number and ``hasattr(<TensorRT value>, "name")`` (the
backend's test for the named-tensor API); any other condition may go either way.

The TensorRT side reads the bindings wheel of each version (a few MB from the registry) without importing it,
so no libnvinfer is needed: the NUL-terminated strings of its compiled module (pybind11 passes every class,
method, property, enum value and keyword name as one) and the top-level names of its ``__init__.py``
(``nptype``, ``__version__``). A name counts as defined when it ends one of those strings: the linker
stores a literal as the tail of a longer one that ends the same way (``INT8`` inside ``UINT8``).

Limits: a name is checked, not its owner (``engine.num_io_tensors`` passes if any class has
``num_io_tensors``), nor argument types or counts; TensorRT 8.5 (JetPack 5) is not on the registry, so 8.6.1,
the nearest, stands for it; uses that no checked version reaches (the bindings API, taken only where the engine
has no ``num_io_tensors``, which 8.6 and later all have) are checked against the oldest wheel.

``python tests/trt_conformance.py --download DIR`` fetches the wheels (.ci/run does, into $EDGE_STAD_TRT_WHEELS).
"""
import ast
import operator
import os
import re
import subprocess
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The bindings wheels checked: TensorRT 8.6 for 8.5 (JetPack 5), 10.3 (JetPack 6), the newest 10.x and 11.x.
WHEELS = ("tensorrt-bindings==8.6.1", "tensorrt-cu12-bindings==10.3.0", "tensorrt-cu12-bindings==10.16.1.11",
          "tensorrt-cu12-bindings==11.4.0.106")
TRUE, FALSE, UNKNOWN = ("true",), ("false",), ("unknown",)
_COMPARE = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}
_OPERATORS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq,
              "!=": operator.ne}
_EXITS = (ast.Return, ast.Raise, ast.Continue, ast.Break)


# -- the bindings ------------------------------------------------------------------------------------

class Bindings:
    """The names one TensorRT version's Python module defines, read from its wheel without importing it."""

    def __init__(self, version, strings, python_names):
        self.version, self.strings, self.python_names = version, strings, python_names
        self.major = int(version.split(".")[0])

    @classmethod
    def from_wheel(cls, path):
        with zipfile.ZipFile(path) as wheel:
            names = wheel.namelist()
            module = [n for n in names if re.search(r"/tensorrt[^/]*\.so$", n)]
            init = [n for n in names if n.endswith("/__init__.py") and n.count("/") == 1]
            if len(module) != 1 or len(init) != 1:
                raise ValueError(f"{path} is not a TensorRT bindings wheel (compiled module {module}, {init})")
            strings = wheel.read(module[0])
            tree = ast.parse(wheel.read(init[0]))
        python_names, version = set(), None
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                python_names.add(node.name)
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        python_names.add(target.id)
                        if target.id == "__version__" and isinstance(node.value, ast.Constant):
                            version = node.value.value
        if version is None:
            raise ValueError(f"{path}: its __init__.py sets no __version__")
        return cls(version, strings, python_names)

    def has(self, name):
        return name in self.python_names or (name.encode() + b"\0") in self.strings


def load_wheels(folder):
    """The :class:`Bindings` of every TensorRT bindings wheel in ``folder``, oldest first."""
    found = [Bindings.from_wheel(os.path.join(folder, name)) for name in sorted(os.listdir(folder))
             if name.startswith("tensorrt") and name.endswith(".whl")]
    return sorted(found, key=lambda b: tuple(int(p) for p in re.findall(r"\d+", b.version)))


def download(folder):
    """Fetch :data:`WHEELS` into ``folder`` with pip (for CPython 3.11 on x86-64 Linux, whatever runs pip)."""
    for spec in WHEELS:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64", "--platform",
                        "manylinux_2_17_x86_64", "--dest", folder, spec], check=True)


# -- the code ----------------------------------------------------------------------------------------

class Use:
    """One attribute (or keyword) used on a TensorRT value, and the condition under which the code reaches it."""

    def __init__(self, path, line, chain, name, condition):
        self.path, self.line, self.chain, self.name, self.condition = path, line, chain, name, condition

    def __repr__(self):
        return f"{self.path}:{self.line}: {self.chain} [{show(self.condition)}]"


def show(condition):
    kind = condition[0]
    if kind in ("true", "false", "unknown"):
        return kind
    if kind == "major":
        return f"major {condition[1]} {condition[2]}"
    if kind == "has":
        return f"has {condition[1]}"
    if kind == "not":
        return f"not ({show(condition[1])})"
    return f" {kind} ".join(show(c) if c[0] in ("major", "has", "unknown") else f"({show(c)})"
                            for c in condition[1:])


def evaluate(condition, bindings):
    """True, False or None (cannot tell) for ``condition`` on TensorRT ``bindings``."""
    kind = condition[0]
    if kind in ("true", "false", "unknown"):
        return {"true": True, "false": False, "unknown": None}[kind]
    if kind == "major":
        return _OPERATORS[condition[1]](bindings.major, condition[2])
    if kind == "has":
        return bindings.has(condition[1])
    if kind == "not":
        value = evaluate(condition[1], bindings)
        return None if value is None else not value
    values = [evaluate(c, bindings) for c in condition[1:]]
    if kind == "and":
        return False if False in values else (True if all(values) else None)
    return True if True in values else (False if all(v is False for v in values) else None)


# Conditions are built folded: constants absorbed, nested and/or flattened, repeats dropped, and a part without
# a version atom (only unknowns) is just unknown, so what is left names the version switches.

def _not(condition):
    return {TRUE: FALSE, FALSE: TRUE, UNKNOWN: UNKNOWN}.get(condition, ("not", condition))


def _junction(kind, conditions, absorbing, neutral):
    parts = []
    for c in conditions:
        for part in (c[1:] if c[0] == kind else (c,)):
            if part == absorbing:
                return absorbing
            if part != neutral and part not in parts:
                parts.append(part)
    if not parts:
        return neutral
    if all(p == UNKNOWN for p in parts):
        return UNKNOWN
    return parts[0] if len(parts) == 1 else (kind,) + tuple(parts)


def _and(*conditions):
    return _junction("and", conditions, FALSE, TRUE)


def _or(conditions):
    return _junction("or", conditions, TRUE, FALSE)


def _chain(node):
    if isinstance(node, ast.Attribute):
        return f"{_chain(node.value)}.{node.attr}"
    if isinstance(node, ast.Call):
        return f"{_chain(node.func)}(...)"
    if isinstance(node, ast.Name):
        return node.id
    return "<expr>"


class _Function:
    def __init__(self, node, module, cls, parent):
        self.node, self.module, self.cls, self.parent = node, module, cls, parent
        self.params = [a.arg for a in node.args.posonlyargs + node.args.args]
        static = any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in node.decorator_list)
        self.positional = self.params[1:] if cls is not None and not static else self.params
        self.calls = []          # (caller function or None, condition at the call site)
        self.defined_under = TRUE


class _Module:
    def __init__(self, path, name, tree):
        self.path, self.name, self.tree = path, name, tree
        self.imports = {}        # local name -> module name
        self.functions = {}      # "f" or "Class.f" -> _Function (module level and class level)
        self.classes = {}        # name -> ast.ClassDef


class Analysis:
    """The TensorRT uses of the Python files under ``roots`` (folders of ``base``)."""

    def __init__(self, roots=("edge_stad", "benchmarks"), base=ROOT):
        self.base, self.modules = base, {}
        for root in roots:
            for folder, _, files in os.walk(os.path.join(base, root)):
                for name in sorted(files):
                    if name.endswith(".py"):
                        path = os.path.join(folder, name)
                        with open(path, encoding="utf-8") as f:
                            text = f.read()
                        if "tensorrt" not in text:   # neither imports it nor calls what returns it
                            continue
                        tree = ast.parse(text, path)
                        module = os.path.relpath(path, base)[:-3].replace(os.sep, ".")
                        self.modules[module] = _Module(path, module, tree)
        # (scope node, name) or (module, "self.attr") -> "obj", "list", ("major",) or ("has", name)
        self.kinds = {}
        self.returns = set()     # functions that return a TensorRT value
        self.functions = {}      # ast node -> _Function
        self.local_names = {}    # function node -> the names it assigns
        for module in self.modules.values():
            self._index(module)
        for _ in range(20):      # to a fixed point: values flow through assignments, calls and returns
            before = (len(self.kinds), len(self.returns))
            self._walk(record=False)
            if (len(self.kinds), len(self.returns)) == before:
                break
        for fn in self.functions.values():   # the call sites again, their conditions under the final kinds
            fn.calls = []
        self._walk(record=False)
        self.uses = self._walk(record=True)

    def _walk(self, record):
        uses = []
        for module in self.modules.values():
            walker = _Walker(self, module, record)
            walker.run()
            uses.extend(walker.uses)
        return uses

    def _index(self, module):
        def visit(body, cls, parent):
            for node in body:
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    fn = _Function(node, module, cls, parent)
                    self.functions[node] = fn
                    if parent is None:
                        module.functions[f"{cls.name}.{node.name}" if cls else node.name] = fn
                    visit(node.body, None, fn)
                elif isinstance(node, ast.ClassDef):
                    if parent is None and cls is None:
                        module.classes[node.name] = node
                    visit(node.body, node, parent)
                elif isinstance(node, (ast.Import, ast.ImportFrom)):
                    for alias in node.names:
                        if isinstance(node, ast.ImportFrom) and node.module:
                            module.imports[alias.asname or alias.name] = f"{node.module}.{alias.name}"
                        else:
                            module.imports[alias.asname or alias.name] = alias.name
                elif hasattr(node, "body"):
                    for field in ("body", "orelse", "finalbody"):
                        visit(getattr(node, field, []), cls, parent)
                    for handler in getattr(node, "handlers", []):
                        visit(handler.body, cls, parent)
        visit(module.tree.body, None, None)

    def reach(self, fn, seen=()):
        """The condition under which the code calls ``fn``: its call sites' (true without any)."""
        if fn in seen:
            return TRUE
        if not fn.calls:
            return fn.defined_under if fn.parent is None else _and(self.reach(fn.parent, seen + (fn,)),
                                                                    fn.defined_under)
        return _or(_and(TRUE if caller is None else self.reach(caller, seen + (fn,)), condition)
                   for caller, condition in fn.calls)


class _Walker:
    """One pass over a module: assigns kinds (``record=False``) or records uses (``record=True``)."""

    def __init__(self, analysis, module, record):
        self.a, self.m, self.record = analysis, module, record
        self.uses = []
        self.scopes = []         # enclosing function / comprehension nodes, innermost last
        self.fn = None           # the enclosing _Function
        self.cls = None

    def run(self):
        self.block(self.m.tree.body, TRUE)

    # -- kinds of names and expressions --

    def _key(self, name):
        """Where ``name`` is bound: the innermost enclosing scope with a kind for it or binding it, else the module."""
        for scope in reversed(self.scopes):
            if (scope, name) in self.a.kinds or name in self._locals(scope):
                return scope, name
        return self.m.tree, name

    def _locals(self, scope):
        if scope not in self.a.local_names:
            names = set()
            if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = scope.args
                names.update(a.arg for a in args.posonlyargs + args.args + args.kwonlyargs)
                todo = list(scope.body)
                while todo:
                    node = todo.pop()
                    if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                        names.add(node.id)
                    elif isinstance(node, (ast.Import, ast.ImportFrom)):
                        names.update((a.asname or a.name).split(".")[0] for a in node.names)
                    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                        todo.extend(ast.iter_child_nodes(node))
            self.a.local_names[scope] = names
        return self.a.local_names[scope]

    def kind(self, node):
        if isinstance(node, ast.Name):
            return self.a.kinds.get(self._key(node.id))
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id == "self":
                return self.a.kinds.get((self.m, "self." + node.attr))
            return "obj" if self.kind(node.value) == "obj" and not node.attr.startswith("__") else None
        if isinstance(node, ast.Call):
            callee = self.resolve(node.func)
            if isinstance(node.func, ast.Name) and node.func.id == "hasattr" and len(node.args) == 2 \
                    and self.kind(node.args[0]) == "obj" and isinstance(node.args[1], ast.Constant):
                return ("has", node.args[1].value)
            if callee is not None and callee.node.name == "major_version":
                return ("major",)
            if callee is not None and callee in self.a.returns:
                return "obj"
            return "obj" if self.kind(node.func) == "obj" else None
        if isinstance(node, (ast.ListComp, ast.GeneratorExp)):
            self.scopes.append(node)
            self.comprehension(node, TRUE, record=False)
            elt = self.kind(node.elt)
            self.scopes.pop()
            return "list" if elt == "obj" else None
        if isinstance(node, ast.IfExp):
            return self.kind(node.body) or self.kind(node.orelse)
        if isinstance(node, ast.BoolOp):
            return next((k for k in map(self.kind, node.values) if k), None)
        return None

    def set_kind(self, target, kind):
        if kind is None:
            return
        if isinstance(target, ast.Name):   # assignments bind in the innermost scope
            self.a.kinds.setdefault((self.scopes[-1] if self.scopes else self.m.tree, target.id), kind)
        elif isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self":
            self.a.kinds.setdefault((self.m, "self." + target.attr), kind)

    def resolve(self, func):
        """The analysed function a call of ``func`` runs, or None."""
        m = self.m
        if isinstance(func, ast.Name):
            name = func.id
            if name in m.functions:
                return m.functions[name]
            if name in m.classes:
                return self._init(m, name)
            target = m.imports.get(name, "")
            module, _, attr = target.rpartition(".")
            if module in self.a.modules:
                return self.a.modules[module].functions.get(attr)
            return None
        if not isinstance(func, ast.Attribute):
            return None
        value = func.value
        if isinstance(value, ast.Name):
            if value.id == "self" and self.cls is not None:
                return self._method(m, self.cls.name, func.attr)
            if value.id in m.classes:
                return self._method(m, value.id, func.attr)
            module = m.imports.get(value.id)
            if module in self.a.modules:
                target = self.a.modules[module]
                return target.functions.get(func.attr) or (self._init(target, func.attr)
                                                           if func.attr in target.classes else None)
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "super" \
                and self.cls is not None:
            for base in self.cls.bases:
                if isinstance(base, ast.Name) and base.id in m.classes:
                    return self._method(m, base.id, func.attr)
        return None

    def _method(self, module, cls, name):
        seen = set()
        while cls in module.classes and cls not in seen:
            seen.add(cls)
            if f"{cls}.{name}" in module.functions:
                return module.functions[f"{cls}.{name}"]
            bases = [b.id for b in module.classes[cls].bases if isinstance(b, ast.Name)]
            cls = bases[0] if bases else None
        return None

    def _init(self, module, cls):
        return self._method(module, cls, "__init__")

    # -- conditions --

    def condition(self, test):
        if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            return _not(self.condition(test.operand))
        if isinstance(test, ast.BoolOp):
            parts = [self.condition(v) for v in test.values]
            return _and(*parts) if isinstance(test.op, ast.And) else _or(parts)
        if isinstance(test, ast.Compare) and len(test.ops) == 1 and type(test.ops[0]) in _COMPARE \
                and self.kind(test.left) == ("major",) and isinstance(test.comparators[0], ast.Constant):
            return ("major", _COMPARE[type(test.ops[0])], test.comparators[0].value)
        kind = self.kind(test)
        if isinstance(kind, tuple) and kind[0] == "has":
            return kind
        return UNKNOWN

    def branches(self, test, condition):
        """The conditions of the two branches ``test`` opens under ``condition`` (uses in ``test`` recorded)."""
        self.expr(test, condition)
        test = self.condition(test)
        return _and(condition, test), _and(condition, _not(test))

    # -- statements --

    def block(self, body, condition):
        for stmt in body:
            self.statement(stmt, condition)
            if isinstance(stmt, ast.If):
                body_exits = _exits(stmt.body)
                else_exits = bool(stmt.orelse) and _exits(stmt.orelse)
                test = self.condition(stmt.test)
                if body_exits and not else_exits:
                    condition = _and(condition, _not(test))
                elif else_exits and not body_exits:
                    condition = _and(condition, test)

    def statement(self, stmt, condition):
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            fn = self.a.functions[stmt]
            if fn.parent is not None:
                fn.defined_under = condition
            for decorator in stmt.decorator_list:
                self.expr(decorator, condition)
            outer = (self.fn, self.cls)
            self.fn, self.cls = fn, fn.cls if fn.cls is not None else (None if fn.parent is None else self.cls)
            self.scopes.append(stmt)
            self.block(stmt.body, TRUE)
            self.scopes.pop()
            self.fn, self.cls = outer
            return
        if isinstance(stmt, ast.ClassDef):
            for base in stmt.bases:
                self.expr(base, condition)
            if any(self.kind(base) == "obj" for base in stmt.bases):
                self.set_kind(ast.Name(id=stmt.name), "obj")   # a subclass of a TensorRT class is one
            outer = self.cls
            self.cls = stmt
            self.block(stmt.body, condition)
            self.cls = outer
            return
        if isinstance(stmt, ast.If):
            yes, no = self.branches(stmt.test, condition)
            self.block(stmt.body, yes)
            self.block(stmt.orelse, no)
            return
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            for alias in stmt.names:
                if isinstance(stmt, ast.Import) and alias.name == "tensorrt":
                    self.set_kind(ast.Name(id=alias.asname or alias.name), "obj")
            return
        if isinstance(stmt, ast.Assign):
            self.expr(stmt.value, condition)
            for target in stmt.targets:
                self.expr(target, condition)
                if isinstance(target, ast.Tuple) and isinstance(stmt.value, ast.Tuple):
                    for t, v in zip(target.elts, stmt.value.elts):
                        self.set_kind(t, self.kind(v))
                else:
                    self.set_kind(target, self.kind(stmt.value))
            return
        if isinstance(stmt, (ast.For, ast.AsyncFor)):
            self.expr(stmt.iter, condition)
            if self.kind(stmt.iter) == "list":
                self.set_kind(stmt.target, "obj")
            self.block(stmt.body, condition)
            self.block(stmt.orelse, condition)
            return
        if isinstance(stmt, ast.Return) and stmt.value is not None:
            self.expr(stmt.value, condition)
            if self.fn is not None and self.kind(stmt.value) == "obj":
                self.a.returns.add(self.fn)
            return
        for _, value in ast.iter_fields(stmt):
            if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
                self.block(value, condition)
            elif isinstance(value, list):
                for item in value:
                    if isinstance(item, ast.ExceptHandler):
                        self.block(item.body, condition)
                    elif isinstance(item, ast.withitem):
                        self.expr(item.context_expr, condition)
                    elif isinstance(item, ast.AST):
                        self.expr(item, condition)
            elif isinstance(value, ast.expr):
                self.expr(value, condition)

    # -- expressions --

    def expr(self, node, condition):
        if isinstance(node, ast.Call):
            self.call(node, condition)
        if isinstance(node, ast.Attribute) and self.kind(node.value) == "obj" \
                and not (isinstance(node.value, ast.Name) and node.value.id == "self"):
            self.use(node, node.attr, _chain(node), condition)
        if isinstance(node, ast.IfExp):
            yes, no = self.branches(node.test, condition)
            self.expr(node.body, yes)
            self.expr(node.orelse, no)
            return
        if isinstance(node, (ast.ListComp, ast.GeneratorExp, ast.SetComp, ast.DictComp)):
            self.scopes.append(node)
            self.comprehension(node, condition, record=True)
            self.scopes.pop()
            return
        if isinstance(node, ast.Lambda):
            return
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr):
                self.expr(child, condition)
            elif isinstance(child, ast.keyword):
                self.expr(child.value, condition)

    def comprehension(self, node, condition, record):
        for generator in node.generators:
            if record:
                self.expr(generator.iter, condition)
            if self.kind(generator.iter) == "list":
                self.set_kind(generator.target, "obj")
            for test in generator.ifs:
                if record:
                    self.expr(test, condition)
        if record:
            for part in ([node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]):
                self.expr(part, condition)

    def call(self, node, condition):
        callee = self.resolve(node.func)
        if callee is not None and not self.record:
            if (self.fn, condition) not in callee.calls:
                callee.calls.append((self.fn, condition))
            for param, arg in zip(callee.positional, node.args):
                if self.kind(arg):
                    self.a.kinds.setdefault((callee.node, param), self.kind(arg))
            for keyword in node.keywords:
                if keyword.arg in callee.params and self.kind(keyword.value):
                    self.a.kinds.setdefault((callee.node, keyword.arg), self.kind(keyword.value))
        if self.kind(node.func) == "obj":
            for keyword in node.keywords:
                if keyword.arg:
                    self.use(node, keyword.arg, f"{_chain(node.func)}({keyword.arg}=)", condition)

    def use(self, node, name, chain, condition):
        if self.record and not any(u.line == node.lineno and u.chain == chain for u in self.uses):
            reach = self.a.reach(self.fn) if self.fn is not None else TRUE
            self.uses.append(Use(os.path.relpath(self.m.path, self.a.base), node.lineno, chain, name,
                                 _and(reach, condition)))


def _exits(body):
    last = body[-1] if body else None
    if isinstance(last, _EXITS):
        return True
    return isinstance(last, ast.If) and bool(last.orelse) and _exits(last.body) and _exits(last.orelse)


def check(uses, versions):
    """``(failures, unreached)``: ``(version, use)`` for each use a version reaches but lacks the name of, and the
    uses no version reaches (each checked against the oldest version instead)."""
    failures, unreached = [], []
    for use in uses:
        reached = [b for b in versions if evaluate(use.condition, b) is not False]
        if not reached:
            unreached.append(use)
            reached = versions[:1]
        failures.extend((b.version, use) for b in reached if not b.has(use.name))
    return failures, unreached


if __name__ == "__main__":
    if sys.argv[1:2] == ["--download"] and len(sys.argv) == 3:
        os.makedirs(sys.argv[2], exist_ok=True)
        download(sys.argv[2])
    else:
        for use in Analysis().uses:
            print(use)
