// Light lint: the recommended JS and TypeScript rules, nothing stylistic.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
    { ignores: ['out/**', 'node_modules/**'] },
    js.configs.recommended,
    ...tseslint.configs.recommended,
    {
        files: ['src/**/*.ts'],
        rules: {
            eqeqeq: 'error',
            'no-console': 'error',
            '@typescript-eslint/no-floating-promises': 'off',
        },
    },
);
