import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'guest/**', 'scratch/**', 'bench/results/**', 'src/shim/gen/**'] },
  js.configs.recommended,
  ...tseslint.configs.strict,
  {
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      '@typescript-eslint/no-non-null-assertion': 'off',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
      '@typescript-eslint/no-floating-promises': 'error',
      'no-empty': ['error', { allowEmptyCatch: true }],
    },
  },
  {
    // The host writes guest memory through GuestMemory's writers, which mark
    // the pages written (snapshots and live migration copy what was written):
    // never straight into a memory's bytes or view. The device page is saved whole.
    files: ['src/**/*.ts'],
    ignores: ['src/kvm/memory.ts', 'src/vmm/device-page.ts'],
    rules: {
      'no-restricted-syntax': ['error',
        {
          selector: "CallExpression > MemberExpression.callee[property.name=/^(set|fill|copyWithin)$/][object.property.name='bytes']",
          message: 'write guest memory with GuestMemory.write/fill/writable, which mark the pages written',
        },
        {
          selector: "CallExpression > MemberExpression.callee[property.name=/^set/][object.property.name='view']",
          message: 'write guest memory with GuestMemory.setUint32/setBigUint64/writableView, which mark the pages written',
        },
      ],
    },
  },
  {
    files: ['**/*.js', '**/*.mjs'],
    ...tseslint.configs.disableTypeChecked,
  },
);
