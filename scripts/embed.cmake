# Turns the file IN into a C source OUT defining `const unsigned char tg_embed_NAME[]` and
# `const size_t tg_embed_NAME_len`. The array is NUL-terminated for text consumers.
file(READ ${IN} hex HEX)
string(LENGTH "${hex}" n)
math(EXPR len "${n} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," body "${hex}")
string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)" "\\1\n" body "${body}")
file(WRITE ${OUT} "#include <stddef.h>\nconst unsigned char tg_embed_${NAME}[] = {\n${body}0x00};\nconst size_t tg_embed_${NAME}_len = ${len};\n")
