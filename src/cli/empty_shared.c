/* libloupe.so is built from the layer archives (whole-archive); CMake needs one source. */
int lp_shared_library_marker;
