"""The store's Lua scripts, one state change per file, grouped by the slot they work in.

`flow/` scripts work in one flow's slot and all take the flow's keys (`flow/_keys.lua`);
`queue/` scripts work in one queue's slot and all take the queue's keys (`queue/_keys.lua`).
Files starting with `_` are includes (`-- @include <path>`), shared snippets written once.
"""
