# System dependencies, all from Debian 12 packages (scripts/deps installs them).
find_package(Threads REQUIRED)
find_package(OpenSSL 3.0 REQUIRED)
# protobuf 3.21 ships no CMake config package on Debian: use FindProtobuf.
find_package(Protobuf REQUIRED)

find_package(PkgConfig REQUIRED)
pkg_check_modules(SECP256K1 REQUIRED IMPORTED_TARGET libsecp256k1)
# The NATS C client (libnats-dev 3.4): the hot NATS subjects in C++ (cpp/nats).
# pkg-config rather than its CMake package, whose export also names a static
# library Debian does not ship.
pkg_check_modules(LIBNATS REQUIRED IMPORTED_TARGET libnats>=3.3)

find_path(WEBSOCKETPP_INCLUDE_DIR websocketpp/server.hpp REQUIRED)
find_path(ASIO_INCLUDE_DIR asio.hpp REQUIRED)
add_library(dclcomms_websocketpp INTERFACE)
target_include_directories(dclcomms_websocketpp SYSTEM INTERFACE ${WEBSOCKETPP_INCLUDE_DIR} ${ASIO_INCLUDE_DIR})
target_compile_definitions(dclcomms_websocketpp INTERFACE ASIO_STANDALONE _WEBSOCKETPP_CPP11_STL_)
target_link_libraries(dclcomms_websocketpp INTERFACE Threads::Threads)

if(DCLCOMMS_TESTS)
  find_package(GTest REQUIRED)
endif()

# JSON for auth chains and JWT claims (nlohmann-json3-dev, header-only).
find_package(nlohmann_json 3.10 REQUIRED)
