"""Built-in plugins. Each module is an ordinary circuitlab plugin, registered through the same hooks
as third-party packages (see ``circuitlab.plugins.BUILTIN_PLUGINS``)."""
