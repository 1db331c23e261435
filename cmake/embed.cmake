# Writes OUT: a C file holding every SQL file of FILES (sorted) as a string,
# so that `cardgate migrate` needs nothing beside the binary.
set(content "/* Generated from the migrations folder by cmake/embed.cmake. Do not edit. */\n")
string(APPEND content "#include \"migrate.h\"\n\nconst struct migration migrations[] = {\n")
string(REPLACE "|" ";" FILES "${FILES}")
set(count 0)
foreach(f IN LISTS FILES)
  get_filename_component(name ${f} NAME)
  file(READ ${f} hex HEX)
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
  # unsigned bytes: UTF-8 in the SQL's comments is above 0x7f.
  string(APPEND content "    {\"${name}\", (const char *)(const unsigned char[]){${bytes} 0x00}},\n")
  math(EXPR count "${count} + 1")
endforeach()
string(APPEND content "};\nconst size_t migrations_count = ${count};\n")
file(WRITE ${OUT} "${content}")
