# Compiler flags shared by every dclcomms target: dclcomms_warnings is an
# INTERFACE target that each library links privately.
add_library(dclcomms_warnings INTERFACE)
target_compile_options(dclcomms_warnings INTERFACE -Wall -Wextra)
if(DCLCOMMS_WERROR)
  target_compile_options(dclcomms_warnings INTERFACE -Werror)
endif()
if(DCLCOMMS_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
endif()
