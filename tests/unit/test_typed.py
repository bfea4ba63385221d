"""Every public function and method of recagent says its types (mypy checks them in `make test`)."""

import importlib
import inspect
import pkgutil

import recagent.agent
import recagent.evals
import recagent.prompts
import recagent.tools

PACKAGES = (recagent.agent, recagent.tools, recagent.prompts, recagent.evals)


def public_functions():
    for package in PACKAGES:
        names = [package.__name__] + [m.name for m in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]
        for name in names:
            module = importlib.import_module(name)
            for attr, obj in vars(module).items():
                callback = getattr(obj, "callback", None)  # a click command: its function
                if inspect.isfunction(callback) and callback.__module__ == name and not attr.startswith("_"):
                    yield f"{name}.{attr}", callback
                if attr.startswith("_") or getattr(obj, "__module__", None) != name:
                    continue
                if inspect.isfunction(obj):
                    yield f"{name}.{attr}", obj
                elif inspect.isclass(obj) and not getattr(obj, "_is_protocol", False):
                    for meth_name, meth in vars(obj).items():
                        func = meth.__func__ if isinstance(meth, (classmethod, staticmethod)) else meth
                        if inspect.isfunction(func) and (not meth_name.startswith("_") or meth_name == "__init__"):
                            yield f"{name}.{attr}.{meth_name}", func


def missing_hints(func) -> list[str]:
    signature = inspect.signature(func)
    missing = [
        p.name
        for p in signature.parameters.values()
        if p.name not in ("self", "cls") and p.annotation is inspect.Parameter.empty
    ]
    if signature.return_annotation is inspect.Signature.empty and func.__name__ != "__init__":
        missing.append("return")
    return missing


def test_public_functions_have_type_hints():
    untyped = {name: gaps for name, func in public_functions() if (gaps := missing_hints(func))}
    assert not untyped, "\n".join(f"{name}: {', '.join(gaps)}" for name, gaps in sorted(untyped.items()))
