# loupe: the two commands are `make demo` and `make test`; see README.md.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=Release

.PHONY: all deps build test demo install fuzz asan clean

all: build

deps:
	@sh scripts/setup-deps

# The stamp is the generated Makefile, not CMakeCache.txt: a configure that
# failed (say, before `make deps` installed a library) leaves a cache behind
# but no Makefile, and the next build must configure again.
$(BUILD)/Makefile:
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS)

build: $(BUILD)/Makefile
	cmake --build $(BUILD) -j $(JOBS)

test:
	@sh scripts/setup-deps test
	$(MAKE) build
	cd $(BUILD) && ctest --output-on-failure -j 2

demo: deps
	$(MAKE) build
	sh scripts/demo

install: build
	cmake --install $(BUILD)

# Sanitizer build of the whole suite (ASan+UBSan) in its own folder.
asan: deps
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DLOUPE_SANITIZE=ON
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ctest --output-on-failure -j 2

fuzz: deps
	sh scripts/fuzz $${FUZZ_SECONDS:-60}

clean:
	rm -rf $(BUILD) build-asan build-fuzz
