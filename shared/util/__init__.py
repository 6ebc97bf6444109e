"""The runtime every virtbus process uses: bus, state, events, errors, settings, logs, HTTP."""
