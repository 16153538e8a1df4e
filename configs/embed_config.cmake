# cmake -P script: embeds IN (a text file) as a C++ string constant `spargo::configs::${SYMBOL}` in OUT.
file(READ "${IN}" _text)
file(WRITE "${OUT}.new"
  "// Generated from ${IN}; do not edit.\n"
  "#include \"absl/strings/string_view.h\"\n"
  "namespace spargo::configs {\n"
  "extern const absl::string_view ${SYMBOL};\n"
  "const absl::string_view ${SYMBOL} = R\"spargo_embed(${_text})spargo_embed\";\n"
  "}  // namespace spargo::configs\n")
file(COPY_FILE "${OUT}.new" "${OUT}" ONLY_IF_DIFFERENT)
