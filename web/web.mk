# The web view (web/): built into operator/kflow/server/web/, which `kflow server` serves and the
# operator image carries (not committed). Included by the top-level Makefile.
WEB_DIR := $(CURDIR)/web
WEB_OUT := $(CURDIR)/operator/kflow/server/web
WEB_SRC := $(shell find $(WEB_DIR)/src -type f 2>/dev/null) $(WEB_DIR)/index.html \
           $(WEB_DIR)/vite.config.ts $(WEB_DIR)/tsconfig.json

.PHONY: web web-test web-lock-check web-clean

web: $(WEB_OUT)/index.html

# npm ci installs exactly package-lock.json (from the npm registry; no CDN at run time).
$(WEB_DIR)/node_modules/.package-lock.json: $(WEB_DIR)/package.json $(WEB_DIR)/package-lock.json
	cd $(WEB_DIR) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# tsc checks the types, then vite writes index.html and hashed assets with relative URLs.
$(WEB_OUT)/index.html: $(WEB_DIR)/node_modules/.package-lock.json $(WEB_SRC)
	cd $(WEB_DIR) && npm run --silent build

# npm ci on a clean checkout accepts only a lock in sync with package.json (make lint).
web-lock-check:
	cd $(WEB_DIR) && npm ci --dry-run --no-audit --no-fund --loglevel=error > /dev/null

# The web view's unit tests (vitest: the event-stream parser, the DAG layout).
web-test: $(WEB_DIR)/node_modules/.package-lock.json
	cd $(WEB_DIR) && npx vitest run

web-clean:
	rm -rf $(WEB_OUT) $(WEB_DIR)/node_modules
