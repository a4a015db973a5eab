"""Name -> constructor tables for everything a user picks by name (models, losses, datasets)."""


class Registry(dict):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, fn=None, *, name: str | None = None):
        """Use as `@REG.register` or `@REG.register(name="focal-exact")`."""
        def add(f):
            key = name or f.__name__
            assert key not in self, f"{self.kind} {key!r} registered twice"
            self[key] = f
            return f
        return add(fn) if fn is not None else add

    def build(self, name: str, **kwargs):
        if name not in self:
            raise ValueError(f"unknown {self.kind} {name!r}; known: {sorted(self)}")
        return self[name](**kwargs)
