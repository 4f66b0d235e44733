# Finds every dependency in one place. LibTorch comes from the project venv's PyTorch wheel
# (scripts/build.sh passes its torch.utils.cmake_prefix_path); the rest from Debian 12 packages, or from a
# private prefix of unpacked .deb files (scripts/build-cuda.sh sets MOIN_DEPS_PREFIX).

find_package(Threads REQUIRED)

if(MOIN_DEPS_PREFIX)
  get_filename_component(MOIN_DEPS_PREFIX "${MOIN_DEPS_PREFIX}" ABSOLUTE)
  if(NOT EXISTS ${MOIN_DEPS_PREFIX}/usr/lib/x86_64-linux-gnu/cmake/faiss/faiss-config.cmake)
    message(FATAL_ERROR "MOIN_DEPS_PREFIX=${MOIN_DEPS_PREFIX} holds no unpacked libfaiss-dev "
                        "(make it with scripts/build-cuda.sh --deps DIR)")
  endif()
  set(MOIN_DEPS_LIBDIR ${MOIN_DEPS_PREFIX}/usr/lib/x86_64-linux-gnu)
  list(PREPEND CMAKE_PREFIX_PATH ${MOIN_DEPS_PREFIX}/usr ${MOIN_DEPS_LIBDIR}/cmake ${MOIN_DEPS_PREFIX}/usr/share/cmake)
  include_directories(BEFORE SYSTEM ${MOIN_DEPS_PREFIX}/usr/include)
  # Unpacked .debs are not on the loader's path: the binaries carry the prefix in their RPATH. DT_RPATH
  # (not RUNPATH) so it also serves the libraries' own dependencies (libopenblas -> libgfortran,
  # libspdlog -> libfmt); -rpath-link lets the linker resolve those at link time.
  # (zlib1g ships in /lib, not /usr/lib.)
  set(MOIN_DEPS_RUNTIME_DIRS ${MOIN_DEPS_LIBDIR} ${MOIN_DEPS_LIBDIR}/openblas-pthread
      ${MOIN_DEPS_PREFIX}/lib/x86_64-linux-gnu)
  list(APPEND CMAKE_BUILD_RPATH ${MOIN_DEPS_RUNTIME_DIRS})
  add_link_options("LINKER:--disable-new-dtags")
  foreach(d ${MOIN_DEPS_RUNTIME_DIRS})
    add_link_options("LINKER:-rpath-link,${d}")
  endforeach()
endif()

find_package(nlohmann_json 3.9 REQUIRED)
# LibTorch's include folder ships its own {fmt} 12, which Debian's spdlog 1.10 (built on {fmt} 9) cannot
# use. A folder holding only a link to the system's fmt/ goes first on the include path (-I is searched
# before LibTorch's -isystem), so spdlog and moin see {fmt} 9 and LibTorch keeps its copy internal.
find_path(MOIN_FMT_INCLUDE fmt/core.h HINTS ${MOIN_DEPS_PREFIX}/usr/include PATHS /usr/include NO_DEFAULT_PATH)
set(MOIN_FMT_SHIM ${CMAKE_BINARY_DIR}/fmt-shim)
file(MAKE_DIRECTORY ${MOIN_FMT_SHIM})
file(CREATE_LINK ${MOIN_FMT_INCLUDE}/fmt ${MOIN_FMT_SHIM}/fmt SYMBOLIC)
find_package(spdlog REQUIRED)
find_package(CLI11 REQUIRED)
# faiss's exported target names OpenMP::OpenMP_CXX but does not look for it.
find_package(OpenMP REQUIRED)
find_package(faiss REQUIRED)
if(MOIN_DEPS_PREFIX)
  # Debian's libfaiss.a names /usr/lib/x86_64-linux-gnu/libblas.so and liblapack.so, links that Debian's
  # alternatives system sets up at install time and `dpkg -x` does not. OpenBLAS provides both BLAS and
  # LAPACK in one library: link the prefix's copy directly.
  set(MOIN_OPENBLAS ${MOIN_DEPS_LIBDIR}/openblas-pthread/libopenblas.so)
  if(NOT EXISTS ${MOIN_OPENBLAS})
    message(FATAL_ERROR "${MOIN_OPENBLAS} is missing: bundle libopenblas-pthread-dev (scripts/bundle-deps.sh)")
  endif()
  set_target_properties(faiss PROPERTIES INTERFACE_LINK_LIBRARIES "$<LINK_ONLY:OpenMP::OpenMP_CXX>;${MOIN_OPENBLAS}")
  get_target_property(_faiss_lib faiss IMPORTED_LOCATION_NONE)
  message(STATUS "moin: faiss ${_faiss_lib} with ${MOIN_OPENBLAS} (from MOIN_DEPS_PREFIX)")
endif()

# sentencepiece has a pkg-config file only; the shim links it, nothing else does.
find_library(SENTENCEPIECE_LIB sentencepiece HINTS ${MOIN_DEPS_PREFIX}/usr/lib/x86_64-linux-gnu REQUIRED)
find_library(SENTENCEPIECE_TRAIN_LIB sentencepiece_train HINTS ${MOIN_DEPS_PREFIX}/usr/lib/x86_64-linux-gnu REQUIRED)
set(SENTENCEPIECE_LIBRARIES ${SENTENCEPIECE_TRAIN_LIB} ${SENTENCEPIECE_LIB})

# Compressed corpora (.jsonl.gz, .jsonl.zst).
find_package(ZLIB REQUIRED)
find_library(ZSTD_LIB zstd HINTS ${MOIN_DEPS_PREFIX}/usr/lib/x86_64-linux-gnu REQUIRED)
set(MOIN_COMPRESSION_LIBS ZLIB::ZLIB ${ZSTD_LIB})

# LibTorch. The wheel is CUDA-enabled: its config looks for the CUDA toolkit, which is present here
# (CI compiles and links the CUDA paths) and on the GPU hosts.
if(NOT DEFINED CAFFE2_USE_CUDNN)
  set(CAFFE2_USE_CUDNN OFF)
endif()
find_package(Torch REQUIRED)
# TORCH_CXX_FLAGS carries -D_GLIBCXX_USE_CXX11_ABI; apply it as a compile option, not a global flag.
separate_arguments(MOIN_TORCH_CXX_FLAGS UNIX_COMMAND "${TORCH_CXX_FLAGS}")
message(STATUS "moin: LibTorch ${Torch_VERSION} from ${Torch_DIR}")

set(MOIN_WITH_CUDA OFF)
if(NOT MOIN_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER AND TARGET torch_cuda)
    set(MOIN_WITH_CUDA ON)
  elseif(MOIN_CUDA STREQUAL "ON")
    message(FATAL_ERROR "MOIN_CUDA=ON but nvcc or a CUDA-enabled LibTorch was not found")
  endif()
endif()
if(MOIN_WITH_CUDA)
  if(NOT DEFINED MOIN_CUDA_ARCHITECTURES)
    set(MOIN_CUDA_ARCHITECTURES "80;90")
  endif()
  set(CMAKE_CUDA_ARCHITECTURES ${MOIN_CUDA_ARCHITECTURES})
  enable_language(CUDA)
  set(CMAKE_CUDA_STANDARD 17)
  message(STATUS "moin: CUDA kernels on (architectures ${MOIN_CUDA_ARCHITECTURES})")
endif()
