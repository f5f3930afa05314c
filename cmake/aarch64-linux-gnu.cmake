# Cross-compiles fleetfl for Debian 12 arm64 with Debian's cross compiler
# (g++-aarch64-linux-gnu) against an arm64 Debian root used as sysroot, which holds the :arm64
# development packages (scripts/install-cross-deps.sh makes it). Generators (protoc,
# grpc_cpp_plugin, flatc) are this machine's. Used by `scripts/package.sh --arch arm64`:
#   cmake -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake -DFLEET_ARM64_SYSROOT=DIR ...
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)

if(NOT FLEET_ARM64_SYSROOT)
  if(DEFINED ENV{FLEET_ARM64_SYSROOT})
    set(FLEET_ARM64_SYSROOT $ENV{FLEET_ARM64_SYSROOT})
  else()
    set(FLEET_ARM64_SYSROOT /var/cache/fleetfl/bookworm-arm64)
  endif()
endif()
if(NOT EXISTS ${FLEET_ARM64_SYSROOT}/usr/lib/aarch64-linux-gnu/libc.so.6)
  message(FATAL_ERROR "${FLEET_ARM64_SYSROOT} is not an arm64 Debian root: run "
                      "scripts/install-cross-deps.sh (or set FLEET_ARM64_SYSROOT)")
endif()
# Try-compiles and re-runs see the same root.
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES FLEET_ARM64_SYSROOT)

set(CMAKE_SYSROOT ${FLEET_ARM64_SYSROOT})
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)

set(CMAKE_FIND_ROOT_PATH ${FLEET_ARM64_SYSROOT})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)  # protoc, flatc, grpc_cpp_plugin run here
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

set(ENV{PKG_CONFIG_SYSROOT_DIR} ${FLEET_ARM64_SYSROOT})
set(ENV{PKG_CONFIG_LIBDIR}
    ${FLEET_ARM64_SYSROOT}/usr/lib/aarch64-linux-gnu/pkgconfig:${FLEET_ARM64_SYSROOT}/usr/share/pkgconfig)
set(ENV{PKG_CONFIG_PATH} "")
