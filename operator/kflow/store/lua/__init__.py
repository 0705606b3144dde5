"""The store's Lua scripts, one state change per `verb-N.lua` file, shared snippets in `_*.lua`."""
